"""Image decoding: JPEG/PNG/TIFF/BMP/WebP, grayscale/RGB/RGBA, 8 or 16 bit, EXIF orientation applied."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".pnm")
MIN_SIZE = 32


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` into an ``(H, W)`` or ``(H, W, 3)`` RGB array (uint8 or uint16), EXIF orientation applied.

    Raises :class:`InputError` with the path and the problem for a missing, empty, undecodable or too small file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    try:
        # ANYDEPTH keeps 16 bit, ANYCOLOR keeps grayscale as one channel; both still apply the EXIF orientation.
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error:
        image = None
    if image is None:
        raise InputError(f"{path}: not a readable image (unknown format, truncated or corrupt)")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    if image.dtype not in (np.uint8, np.uint16):
        image = _to_uint16(image)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise InputError(f"{path}: image is {w}x{h} px, smaller than the minimum {MIN_SIZE} px")
    return image


def _to_uint16(image: np.ndarray) -> np.ndarray:
    """Float or wider-int images (e.g. 32-bit TIFF) scaled into uint16."""
    image = image.astype(np.float64)
    lo, hi = float(image.min()), float(image.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return ((image - lo) * scale).astype(np.uint16)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` uint8/uint16 array -> ``(C, H, W)`` float32 tensor in [0, 1]."""
    import torch  # here, so that listing and pairing images does not load torch

    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    array = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    # divide in float64, then round once, as the reference preprocessing does
    return torch.from_numpy((array / scale).astype(np.float32))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read ``path`` as a ``(C, H, W)`` float32 tensor in [0, 1] (C is 1 or 3)."""
    return image_to_tensor(read_image(path))
