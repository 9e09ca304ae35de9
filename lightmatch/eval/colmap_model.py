"""Ground truth for relative-pose evaluation from any COLMAP reconstruction.

:func:`pairs_from_colmap_model` reads a model (``cameras``, ``images``, ``points3D``, binary or text, with
pycolmap) and returns :class:`~lightmatch.eval.pose_data.PosePair` records that
:func:`~lightmatch.eval.pose.evaluate_pose` scores exactly like a SuperGlue pairs file:

* intrinsics from each image's camera (pinhole part; COLMAP puts the centre of the top-left pixel at (0.5, 0.5),
  lightmatch at (0, 0), so the principal point moves by -0.5). Distortion is ignored: evaluate on an undistorted
  model (``colmap image_undistorter``) for exact numbers; :class:`ColmapPairs` lists the cameras that had some;
* ``T_0to1 = cam_from_world(1) @ cam_from_world(0)^-1`` of the two registered images;
* pairs either given (``name0 name1`` lines) or sampled, as MegaDepth-1500 is, by covisibility: the number of 3D
  points both images observe divided by the smaller of their numbers of observed 3D points; the pairs whose
  covisibility lies in ``[min_covisibility, max_covisibility]`` are drawn uniformly with a seed.

A reconstruction is ground truth only up to its own accuracy, and it favours whatever features built it (their
keypoints are the ones the poses were fitted to).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..io.atomic import atomic_output
from ..io.pairs import read_pairs
from .pose_data import PosePair

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
NUM_PAIRS = 1500  # pairs sampled by default (MegaDepth-1500 style)
MIN_COVISIBILITY = 0.1  # least covisibility of a sampled pair by default


@dataclass
class ColmapPairs:
    """What :func:`pairs_from_colmap_model` returns.

    Attributes:
        pairs: the pairs with ground truth. covisibility: ``(len(pairs),)`` covisibility of each pair.
        num_candidates: registered image pairs within the covisibility range (sampling only, else ``len(pairs)``).
        distorted_cameras: ids of cameras whose distortion parameters were ignored.
    """

    pairs: list[PosePair]
    covisibility: np.ndarray
    num_candidates: int
    distorted_cameras: list[int] = field(default_factory=list)


def read_colmap_model(model_dir: str | os.PathLike) -> Any:
    """``pycolmap.Reconstruction`` of ``model_dir``; one-line :class:`InputError` / :class:`ConfigError` otherwise."""
    try:
        import pycolmap
    except ImportError:
        raise ConfigError("--colmap-model needs the 'pycolmap' package: pip install 'lightmatch[colmap]'") from None
    path = Path(model_dir)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a COLMAP model with cameras, images and points3D)")
    try:
        return pycolmap.Reconstruction(str(path))
    except (ValueError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read the COLMAP model ({message})") from None


def intrinsics(camera: Any) -> np.ndarray:
    """``(3, 3)`` K of a pycolmap camera in lightmatch's pixel convention (principal point - 0.5)."""
    K = np.asarray(camera.calibration_matrix(), dtype=np.float64).copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def covisibility_counts(reconstruction: Any) -> tuple[Counter, dict[int, int]]:
    """Shared 3D points per image pair ``(id0 < id1)`` and observed 3D points per image, from the tracks."""
    shared: Counter = Counter()
    observed: Counter = Counter()
    for point in reconstruction.points3D.values():
        ids = sorted({element.image_id for element in point.track.elements})
        observed.update(ids)
        shared.update(combinations(ids, 2))
    return shared, dict(observed)


def _pose_pair(reconstruction: Any, id0: int, id1: int) -> PosePair:
    im0, im1 = reconstruction.images[id0], reconstruction.images[id1]
    T0, T1 = np.eye(4), np.eye(4)
    T0[:3] = im0.cam_from_world().matrix()
    T1[:3] = im1.cam_from_world().matrix()
    K0 = intrinsics(reconstruction.cameras[im0.camera_id])
    K1 = intrinsics(reconstruction.cameras[im1.camera_id])
    return PosePair(im0.name, im1.name, 0, 0, K0, K1, T1 @ np.linalg.inv(T0))


def pairs_from_colmap_model(
    model_dir: str | os.PathLike,
    pairs_file: Optional[str | os.PathLike] = None,
    num_pairs: int = NUM_PAIRS,
    min_covisibility: float = MIN_COVISIBILITY,
    max_covisibility: float = 1.0,
    seed: int = 0,
) -> ColmapPairs:
    """Pairs with ground-truth intrinsics and relative pose from a COLMAP model (see the module docstring).

    Args:
        model_dir: folder with ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``).
        pairs_file: ``name0 name1`` lines (hloc pairs file); both images must be registered in the model.
            Without it, ``num_pairs`` pairs are sampled (all of them when fewer qualify).
        min_covisibility, max_covisibility: covisibility range of sampled pairs.
        seed: seed of the sampling.
    """
    if not 0 <= min_covisibility <= max_covisibility <= 1:
        raise ConfigError(f"covisibility range [{min_covisibility}, {max_covisibility}] must lie within [0, 1]")
    if pairs_file is None and num_pairs < 1:
        raise ConfigError(f"--num-pairs must be positive, got {num_pairs}")
    reconstruction = read_colmap_model(model_dir)
    shared, observed = covisibility_counts(reconstruction)
    registered = {image_id: image for image_id, image in reconstruction.images.items() if image.has_pose}
    by_name = {image.name: image_id for image_id, image in registered.items()}

    def covisibility(a: int, b: int) -> float:
        n = min(observed.get(a, 0), observed.get(b, 0))
        return shared[(min(a, b), max(a, b))] / n if n else 0.0

    if pairs_file is not None:
        chosen = []
        for name0, name1 in read_pairs(pairs_file):
            missing = [n for n in (name0, name1) if n not in by_name]
            if missing:
                raise InputError(f"{pairs_file}: image '{missing[0]}' is not registered in the model {model_dir}")
            chosen.append((by_name[name0], by_name[name1]))
        num_candidates = len(chosen)
    else:
        candidates = sorted(
            (a, b) for a, b in combinations(sorted(registered), 2)
            if min_covisibility <= covisibility(a, b) <= max_covisibility and shared[(a, b)] > 0)
        num_candidates = len(candidates)
        if num_candidates == 0:
            raise InputError(f"{model_dir}: no registered image pair has a covisibility in "
                             f"[{min_covisibility}, {max_covisibility}]")
        pick = np.random.default_rng(seed).choice(num_candidates, min(num_pairs, num_candidates), replace=False)
        chosen = [candidates[i] for i in sorted(pick)]
    pairs = [_pose_pair(reconstruction, a, b) for a, b in chosen]
    used = {reconstruction.images[i].camera_id for pair in chosen for i in pair}
    distorted = sorted(c for c in used if reconstruction.cameras[c].model.name not in PINHOLE_MODELS
                       and np.any(np.asarray(reconstruction.cameras[c].params)[_extra_params(reconstruction, c)]))
    return ColmapPairs(pairs, np.array([covisibility(a, b) for a, b in chosen]), num_candidates, distorted)


def _extra_params(reconstruction: Any, camera_id: int) -> Sequence[int]:
    """Indices of a camera's distortion parameters (those that are not focal lengths or principal point)."""
    camera = reconstruction.cameras[camera_id]
    pinhole = set(camera.focal_length_idxs()) | set(camera.principal_point_idxs())
    return [i for i in range(len(camera.params)) if i not in pinhole]


def format_pose_pair_line(pair: PosePair) -> str:
    """One SuperGlue pairs-file line (38 fields) for ``pair``."""
    numbers = np.concatenate([pair.K0.reshape(-1), pair.K1.reshape(-1), pair.T_0to1.reshape(-1)])
    return " ".join([pair.name0, pair.name1, str(pair.rot0), str(pair.rot1)] + [repr(float(v)) for v in numbers])


def write_pose_pairs(pairs: Sequence[PosePair], path: str | os.PathLike) -> Path:
    """Write ``pairs`` as a SuperGlue pairs file (atomically), so the sampled set can be evaluated again as
    ``lightmatch eval pose PATH IMAGE_DIR``. Returns the path."""
    with atomic_output(path, "pairs file") as tmp:
        tmp.write_text("".join(format_pose_pair_line(p) + "\n" for p in pairs), encoding="utf-8")
    return Path(path)
