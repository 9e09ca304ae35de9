"""Relative-pose evaluation data: SuperGlue's pairs files with ground truth, and its resize/EXIF-rotation handling.

A pairs file has one pair per line, 38 whitespace-separated fields::

    name0 name1 rot0 rot1 K0(9, row-major) K1(9, row-major) T_0to1(16, row-major)

``rot0``/``rot1`` are the number of 90 degree counter-clockwise rotations (``np.rot90``) applied to each image
before matching (SuperGlue uses them for EXIF orientation). ``K`` are the intrinsics of the original images and
``T_0to1`` the ``(4, 4)`` transform from camera 0 to camera 1. Empty lines and lines starting with ``#`` are skipped.

To evaluate, the images are resized (:func:`resize_for_eval`), then rotated, and the calibration is adapted with
:func:`adapt_pair_to_images`, exactly as ``match_pairs.py --eval`` does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..io.files import check_regular_file

NUM_FIELDS = 38


@dataclass
class PosePair:
    """One line of a pose pairs file.

    Attributes:
        name0, name1: image names (paths relative to the image folder).
        rot0, rot1: quarter turns counter-clockwise, 0..3.
        K0, K1: ``(3, 3)`` float64 intrinsics of the original images.
        T_0to1: ``(4, 4)`` float64 relative pose.
        line: 1-based line number in the file (0 when not read from a file).
    """

    name0: str
    name1: str
    rot0: int
    rot1: int
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray
    line: int = 0


def parse_pose_pair_line(text: str, where: str = "<string>") -> PosePair:
    """Parse one 38-field line. ``where`` (``"file:line"``) prefixes the message of the :class:`InputError`."""
    fields = text.split()
    if len(fields) != NUM_FIELDS:
        raise InputError(
            f"{where}: expected {NUM_FIELDS} fields (name0 name1 rot0 rot1 K0[9] K1[9] T_0to1[16]), "
            f"found {len(fields)}"
        )
    rots = []
    for i in (2, 3):
        try:
            rot = int(fields[i])
        except ValueError:
            raise InputError(f"{where}: field {i + 1} (rot{i - 2}) must be an integer 0-3, got {fields[i]!r}") from None
        if not 0 <= rot <= 3:
            raise InputError(f"{where}: field {i + 1} (rot{i - 2}) must be an integer 0-3, got {fields[i]!r}")
        rots.append(rot)
    values = []
    for i in range(4, NUM_FIELDS):
        try:
            v = float(fields[i])
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            raise InputError(f"{where}: field {i + 1} must be a finite number, got {fields[i]!r}")
        values.append(v)
    arr = np.asarray(values, dtype=np.float64)
    K0, K1, T = arr[:9].reshape(3, 3), arr[9:18].reshape(3, 3), arr[18:].reshape(4, 4)
    for name, K in (("K0", K0), ("K1", K1)):
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"{where}: {name} has a non-positive focal length ({K[0, 0]:g}, {K[1, 1]:g})")
    return PosePair(fields[0], fields[1], rots[0], rots[1], K0, K1, T)


def read_pose_pairs(path: str | os.PathLike) -> list[PosePair]:
    """Read a SuperGlue pairs file with ground truth; raises :class:`InputError` naming the file and line."""
    path = check_regular_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pair = parse_pose_pair_line(stripped, f"{path}:{lineno}")
        pair.line = lineno
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{path}: no pairs in file")
    return pairs


def resize_for_eval(w: int, h: int, resize: Sequence[int], upsample: bool = True) -> tuple[int, int]:
    """Target size ``(w_new, h_new)`` of SuperGlue's ``process_resize``.

    ``resize`` is ``[W, H]`` (exact size), ``[max_dim]`` (longer side scaled to ``max_dim``, rounded) or ``[-1]``
    (no resizing). ``[max_dim, -1]`` means ``[max_dim]``, as in ``match_pairs.py``. Not ``upsample``: an image
    smaller than ``[max_dim]`` keeps its size (a preset's bound; SuperGlue enlarges it).
    """
    resize = [int(r) for r in resize]
    if len(resize) == 2 and resize[1] == -1:
        resize = resize[:1]
    if len(resize) == 1 and resize[0] > 0:
        scale = resize[0] / max(h, w)
        if scale > 1 and not upsample:
            return int(w), int(h)
        return int(round(w * scale)), int(round(h * scale))
    if len(resize) == 1 and resize[0] == -1:
        return int(w), int(h)
    if len(resize) == 2 and resize[0] > 0 and resize[1] > 0:
        return resize[0], resize[1]
    raise ConfigError(f"resize must be [W H], [max_dim] or [-1], got {resize}")


def scale_intrinsics(K: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Intrinsics of an image resized by ``1 / scales``: ``diag(1 / sx, 1 / sy, 1) @ K``.

    ``scales = (w / w_new, h / h_new)``, old size over new size as in SuperGlue's ``read_image``. -> ``(3, 3)``.
    """
    return np.diag([1.0 / scales[0], 1.0 / scales[1], 1.0]) @ np.asarray(K, dtype=np.float64)


def rotate_intrinsics(K: np.ndarray, image_shape: Sequence[int], rot: int) -> np.ndarray:
    """Intrinsics after rotating the image by ``rot`` quarter turns counter-clockwise (``np.rot90(image, rot)``).

    ``image_shape`` is the shape ``(rows, cols, ...)`` of the image *after* rotation (as in SuperGlue). With ``w``,
    ``h`` the size before rotation, a pixel ``(x, y)`` moves to ``(y, w-1-x)`` for ``rot = 1``, to
    ``(w-1-x, h-1-y)`` for 2 and to ``(h-1-y, x)`` for 3, hence (skew ignored, as SuperGlue)::

        rot 1: [[fy, 0, cy], [0, fx, w-1-cx], [0, 0, 1]]
        rot 2: [[fx, 0, w-1-cx], [0, fy, h-1-cy], [0, 0, 1]]
        rot 3: [[fy, 0, h-1-cy], [0, fx, cx], [0, 0, 1]]
    """
    K = np.asarray(K)
    rot = int(rot) % 4
    if rot == 0:
        return K.copy()
    rows, cols = int(image_shape[0]), int(image_shape[1])
    h, w = (cols, rows) if rot % 2 else (rows, cols)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if rot == 1:
        out = [[fy, 0.0, cy], [0.0, fx, w - 1 - cx], [0.0, 0.0, 1.0]]
    elif rot == 2:
        out = [[fx, 0.0, w - 1 - cx], [0.0, fy, h - 1 - cy], [0.0, 0.0, 1.0]]
    else:
        out = [[fy, 0.0, h - 1 - cy], [0.0, fx, cx], [0.0, 0.0, 1.0]]
    return np.array(out, dtype=K.dtype)


# Camera-frame rotations matching rotate_intrinsics: rot 1 maps (X, Y) -> (Y, -X), i.e. Rz(270 deg), rot 2 Rz(180),
# rot 3 Rz(90) (SuperGlue builds the same matrices from cos/sin in float32; here they are exact).
_INPLANE = [
    np.eye(4),
    np.array([[0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    np.array([[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
    np.array([[0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
]


def rotate_pose_inplane(i_T_w: np.ndarray, rot: int) -> np.ndarray:
    """Left-multiply a ``(4, 4)`` world-to-camera pose by the in-plane camera rotation of ``rot`` quarter turns
    (``Rz(-90 deg * rot)``), the camera-frame counterpart of :func:`rotate_intrinsics`. -> ``(4, 4)``."""
    return _INPLANE[int(rot) % 4] @ np.asarray(i_T_w, dtype=np.float64)


def eval_image_scales(w: int, h: int, resize: Sequence[int], rot: int,
                      upsample: bool = True) -> tuple[tuple[int, int], tuple[float, float]]:
    """SuperGlue's ``read_image`` bookkeeping: ``((w_new, h_new), scales)`` for an original ``w x h`` image.

    ``scales = (w / w_new, h / h_new)``, swapped when ``rot`` is odd (SuperGlue does so before scaling the
    un-rotated intrinsics; it only matters for non-uniform resizing, and is kept for identical numbers).
    """
    w_new, h_new = resize_for_eval(w, h, resize, upsample)
    scales = (float(w) / float(w_new), float(h) / float(h_new))
    if rot % 2:
        scales = scales[::-1]
    return (w_new, h_new), scales


def adapt_pair_to_images(
    pair: PosePair, size0: Sequence[int], size1: Sequence[int], resize: Sequence[int] = (-1,), upsample: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration and pose for keypoints detected on the resized, then rotated, images (``match_pairs.py``).

    Args:
        pair: the ground truth. size0, size1: ``(W, H)`` of the original images (before resize and rotation).
        resize: as :func:`resize_for_eval`; image ``i`` is resized to ``resize_for_eval(W, H, resize)`` and then
            rotated with ``np.rot90(image, pair.rot_i)``. upsample: as :func:`resize_for_eval`.
    Returns:
        ``(K0, K1, T_0to1)``: ``(3, 3)``, ``(3, 3)``, ``(4, 4)`` float64.
    """
    (w0, h0), scales0 = eval_image_scales(int(size0[0]), int(size0[1]), resize, pair.rot0, upsample)
    (w1, h1), scales1 = eval_image_scales(int(size1[0]), int(size1[1]), resize, pair.rot1, upsample)
    K0 = scale_intrinsics(pair.K0, scales0)
    K1 = scale_intrinsics(pair.K1, scales1)
    T_0to1 = np.asarray(pair.T_0to1, dtype=np.float64)
    if pair.rot0 != 0 or pair.rot1 != 0:
        cam0_T_w = np.eye(4)
        cam1_T_w = T_0to1
        if pair.rot0 != 0:
            shape0 = (w0, h0) if pair.rot0 % 2 else (h0, w0)  # (rows, cols) after rotation
            K0 = rotate_intrinsics(K0, shape0, pair.rot0)
            cam0_T_w = rotate_pose_inplane(cam0_T_w, pair.rot0)
        if pair.rot1 != 0:
            shape1 = (w1, h1) if pair.rot1 % 2 else (h1, w1)
            K1 = rotate_intrinsics(K1, shape1, pair.rot1)
            cam1_T_w = rotate_pose_inplane(cam1_T_w, pair.rot1)
        T_0to1 = cam1_T_w @ np.linalg.inv(cam0_T_w)
    return K0, K1, T_0to1
