"""COLMAP's camera models and the initial parameters a database gets for each image (numpy only: the CLI lists
the models without loading torch)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

FOCAL_FACTOR = 1.2  # COLMAP's default focal length: 1.2 times the long side

# name -> (COLMAP model id, number of focal parameters, default values of the parameters after cx, cy)
CAMERA_MODELS: dict[str, tuple[int, int, tuple[float, ...]]] = {
    "SIMPLE_PINHOLE": (0, 1, ()),
    "PINHOLE": (1, 2, ()),
    "SIMPLE_RADIAL": (2, 1, (0.0,)),
    "RADIAL": (3, 1, (0.0, 0.0)),
    "OPENCV": (4, 2, (0.0,) * 4),
    "OPENCV_FISHEYE": (5, 2, (0.0,) * 4),
    "FULL_OPENCV": (6, 2, (0.0,) * 8),
    "FOV": (7, 2, (0.01,)),
    "SIMPLE_RADIAL_FISHEYE": (8, 1, (0.0,)),
    "RADIAL_FISHEYE": (9, 1, (0.0, 0.0)),
    "THIN_PRISM_FISHEYE": (10, 2, (0.0,) * 8),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 2, (0.0,) * 12),
}


def camera_params(model: str, width: int, height: int) -> np.ndarray:
    """COLMAP's initial parameters for ``model``: focal ``1.2 * max(W, H)``, centre ``(W/2, H/2)``, no distortion."""
    if model not in CAMERA_MODELS:
        raise ConfigError(f"unknown COLMAP camera model {model!r}; choose one of {', '.join(CAMERA_MODELS)}")
    _, num_focal, extra = CAMERA_MODELS[model]
    focal = FOCAL_FACTOR * max(width, height)
    return np.array([focal] * num_focal + [width / 2, height / 2] + list(extra), dtype=np.float64)
