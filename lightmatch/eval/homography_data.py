"""Homography evaluation data: HPatches sequences, and synthetic pairs warped from any images.

Both readers return :class:`HomographyPair` lists: two image paths and the ``(3, 3)`` homography ``H_0to1`` taking
pixel ``(x, y)`` of image 0 to image 1 (pixel centres at integer coordinates, as OpenCV's ``warpPerspective``).

* HPatches layout: ``root/<seq>/1.ppm .. 6.ppm`` and ``root/<seq>/H_1_<k>`` (3 lines of 3 numbers) for sequences
  named ``i_*`` (illumination) and ``v_*`` (viewpoint); pairs are ``(1, k)`` for ``k = 2..6``.
* Synthetic layout (written by :func:`make_synthetic_pairs`): ``root/pairs.txt`` whose lines are
  ``name0 name1 h00 h01 h02 h10 h11 h12 h20 h21 h22`` with names relative to ``root``; ``#`` lines are comments.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..io.homography import check_homography, parse_numbers, read_homography, read_text
from ..io.images import read_image

PAIRS_FILE = "pairs.txt"

# Sequences with very large images, left out of HPatches results in previous papers (glue-factory, LightGlue).
HPATCHES_LARGE_SCENES = (
    "i_contruction",
    "i_crownnight",
    "i_dc",
    "i_pencils",
    "i_whitebuilding",
    "v_artisans",
    "v_astronautis",
    "v_talent",
)


@dataclass
class HomographyPair:
    """Two images related by a homography.

    Attributes:
        root: folder the names are relative to. name0, name1: image names (``/``-separated, relative to ``root``).
        H_0to1: ``(3, 3)`` float64, maps pixels of image 0 to image 1. scene: sequence name ("" if none).
    """

    root: Path
    name0: str
    name1: str
    H_0to1: np.ndarray
    scene: str = ""

    @property
    def path0(self) -> Path:
        return self.root / self.name0

    @property
    def path1(self) -> Path:
        return self.root / self.name1


# --------------------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------------------


def read_hpatches(
    root: str | os.PathLike, skip_large: bool = True, subset: Optional[str] = None
) -> list[HomographyPair]:
    """Pairs ``(1.ppm, k.ppm)``, ``k = 2..6``, of every sequence folder ``i_*``/``v_*`` of an HPatches root, sorted.

    Args:
        skip_large: leave out :data:`HPATCHES_LARGE_SCENES` (as glue-factory does by default).
        subset: ``"i"`` or ``"v"`` to keep only illumination or viewpoint sequences.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    if subset not in (None, "i", "v"):
        raise ValueError(f"subset must be None, 'i' or 'v', got {subset!r}")
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    if not seqs:
        raise InputError(f"{root}: no HPatches sequence folders (i_* or v_*)")
    pairs = []
    for seq in seqs:
        if skip_large and seq.name in HPATCHES_LARGE_SCENES:
            continue
        if subset is not None and seq.name[0] != subset:
            continue
        if not (seq / "1.ppm").is_file():
            raise InputError(f"{seq / '1.ppm'}: no such file")
        for k in range(2, 7):
            if not (seq / f"{k}.ppm").is_file():
                raise InputError(f"{seq / f'{k}.ppm'}: no such file")
            H = read_homography(seq / f"H_1_{k}")
            pairs.append(HomographyPair(root, f"{seq.name}/1.ppm", f"{seq.name}/{k}.ppm", H, seq.name))
    return pairs


def read_homography_pairs(path: str | os.PathLike) -> list[HomographyPair]:
    """Read a homography pairs file (``name0 name1`` + 9 numbers per line); names are relative to its folder."""
    path = Path(path)
    pairs = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = stripped.split()
        where = f"{path}:{lineno}"
        if len(tokens) != 11:
            raise InputError(f"{where}: expected 11 fields (name0 name1 H_0to1[9]), found {len(tokens)}")
        H = np.array(parse_numbers(tokens[2:], where), dtype=np.float64).reshape(3, 3)
        pairs.append(HomographyPair(path.parent, tokens[0], tokens[1], check_homography(H, where)))
    if not pairs:
        raise InputError(f"{path}: no pairs in file")
    return pairs


def load_homography_pairs(path: str | os.PathLike, **hpatches_options) -> list[HomographyPair]:
    """Read pairs from a pairs file, a folder holding ``pairs.txt``, or an HPatches root (see :func:`read_hpatches`)."""
    path = Path(path)
    if path.is_file():
        return read_homography_pairs(path)
    if path.is_dir():
        if (path / PAIRS_FILE).is_file():
            return read_homography_pairs(path / PAIRS_FILE)
        return read_hpatches(path, **hpatches_options)
    raise InputError(f"{path}: no such file or folder")


def hpatches_resize(w: int, h: int, resize: Optional[int] = 480, side: str = "short") -> tuple[int, int]:
    """New ``(w, h)`` of glue-factory's ``ImagePreprocessor`` (``resize`` px on the ``short``/``long`` side,
    the other side ``int()``-truncated; ``None`` keeps the size). glue-factory's HPatches eval uses 480, short."""
    if resize is None:
        return int(w), int(h)
    if side not in ("short", "long"):
        raise ValueError(f"side must be 'short' or 'long', got {side!r}")
    aspect = w / h
    if (side == "short") ^ (aspect < 1.0):
        return int(resize * aspect), int(resize)
    return int(resize), int(resize / aspect)


def rescale_homography(H: np.ndarray, scale0: Sequence[float], scale1: Sequence[float]) -> np.ndarray:
    """Homography between resized images: ``diag(s1) @ H @ diag(s0)^-1``, ``scale_i = (w_new / w, h_new / h)``."""
    S0 = np.diag([float(scale0[0]), float(scale0[1]), 1.0])
    S1 = np.diag([float(scale1[0]), float(scale1[1]), 1.0])
    return S1 @ np.asarray(H, dtype=np.float64) @ np.linalg.inv(S0)


# --------------------------------------------------------------------------------------------------------------------
# Synthetic homographies
# --------------------------------------------------------------------------------------------------------------------


def _quad_is_convex(quad: np.ndarray, min_convexity: float) -> bool:
    """All turns of the closed polygon ``(4, 2)`` (in [0, 1] units) have the same sign and magnitude > margin."""
    a = quad
    b = np.roll(quad, -1, axis=0)
    c = np.roll(quad, -2, axis=0)
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - b[:, 1]) - (c[:, 0] - b[:, 0]) * (b[:, 1] - a[:, 1])
    return bool(np.all(cross < -min_convexity) or np.all(cross > min_convexity))


def synthetic_homography(
    rng: np.random.Generator,
    width: int,
    height: int,
    out_size: Optional[Sequence[int]] = None,
    difficulty: float = 0.8,
    translation: float = 1.0,
    max_angle: float = 60.0,
    n_angles: int = 10,
    min_convexity: float = 0.05,
) -> np.ndarray:
    """Random homography from a ``width x height`` image onto an ``out_size`` patch (glue-factory's sampling).

    A quadrilateral is drawn inside the source image and mapped onto the whole output patch, so the warped patch
    has no empty border. As in glue-factory's ``sample_homography_corners``: each corner of the full image moves
    towards the corner of a centred box of relative size ``1 - difficulty`` by a uniform fraction (perspective and
    scaling; redrawn until the quadrilateral is clearly convex), the quadrilateral is centred, rotated by the first
    of ``n_angles`` shuffled angles in ``[-max_angle, max_angle] * difficulty`` that keeps it inside the image, and
    shifted by a uniform fraction of the free space times ``translation * difficulty``.

    Args:
        rng: the random source. out_size: ``(W, H)`` of the output patch (default: the source size).
    Returns:
        ``(3, 3)`` float64 ``H`` mapping source pixels to patch pixels (for ``cv2.warpPerspective(img, H, out_size)``).
    """
    W, H = float(width), float(height)
    out_w, out_h = (int(width), int(height)) if out_size is None else (int(out_size[0]), int(out_size[1]))
    size = np.array([W, H])
    # corners in the order top-left, bottom-left, bottom-right, top-right (same order for source and patch)
    unit = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    full = unit * size
    inner = size / 2 + (unit - 0.5) * size * (1.0 - difficulty)
    quad = inner.copy()
    for _ in range(100):
        cand = full + rng.uniform(0.0, 1.0, size=(4, 2)) * (inner - full)
        if _quad_is_convex(cand / size, min_convexity):
            quad = cand
            break
    quad = quad - quad.mean(0) + size / 2

    if n_angles > 0 and difficulty > 0:
        limit = math.radians(max_angle) * difficulty
        angles = rng.permutation(np.linspace(-limit, limit, n_angles))
        centre = quad.mean(0)
        for a in angles:
            c, s = math.cos(a), math.sin(a)
            rotated = (quad - centre) @ np.array([[c, s], [-s, c]]) + centre
            if np.all((rotated >= 0.0) & (rotated < size)):
                quad = rotated
                break

    if translation > 0:
        lo = -quad.min(0)
        hi = size - quad.max(0)
        quad = quad + rng.uniform(lo, hi) * translation * difficulty

    patch = unit * np.array([out_w, out_h], dtype=np.float64)
    Hm = cv2.getPerspectiveTransform(quad.astype(np.float32), patch.astype(np.float32)).astype(np.float64)
    return Hm / Hm[2, 2]


def photometric_augment(
    rng: np.random.Generator,
    image: np.ndarray,
    p: float = 0.5,
    brightness: float = 0.2,
    contrast: float = 0.3,
    noise_std: float = 0.03,
    blur_sigma: tuple[float, float] = (0.5, 1.5),
) -> np.ndarray:
    """Random photometric changes of a float image in [0, 1], ``(H, W)`` or ``(H, W, C)`` -> same shape.

    Each change is applied with probability ``p``, in this order: contrast ``x (1 + U(-contrast, contrast))`` and
    brightness ``+ U(-brightness, brightness)``, Gaussian blur with sigma ``U(*blur_sigma)``, additive Gaussian
    noise with std ``U(0, noise_std)``. All random numbers are drawn every time, so the stream does not depend on
    which changes apply.
    """
    u = rng.uniform(0.0, 1.0, size=3)
    c = rng.uniform(-contrast, contrast)
    b = rng.uniform(-brightness, brightness)
    sigma = rng.uniform(*blur_sigma)
    std = rng.uniform(0.0, noise_std)
    noise = rng.standard_normal(image.shape).astype(np.float32)
    out = image.astype(np.float32)
    if u[0] < p:
        out = (out - 0.5) * (1.0 + c) + 0.5 + b
    if u[1] < p:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)
    if u[2] < p:
        out = out + std * noise
    return np.clip(out, 0.0, 1.0)


def _to_float01(image: np.ndarray) -> np.ndarray:
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def _write_png(path: Path, image01: np.ndarray) -> None:
    img = np.round(image01 * 255.0).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OutputError(f"{path}: cannot write image")


def make_synthetic_pairs(
    image_paths: Sequence[str | os.PathLike],
    num_pairs: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: Sequence[int] = (640, 480),
    photometric: bool = True,
    photometric_p: float = 0.5,
    difficulty: float = 0.8,
    translation: float = 1.0,
    max_angle: float = 60.0,
) -> list[HomographyPair]:
    """Write ``num_pairs`` synthetic pairs and their ``pairs.txt`` to ``out_dir``; the same seed gives the same files.

    Pair ``k`` uses source image ``order[k % n]`` (``order`` a seeded permutation of ``image_paths``): two views are
    drawn with :func:`synthetic_homography` (``size`` patches), each photometrically changed
    (:func:`photometric_augment`) when ``photometric``, and written as ``pair_<k>_0.png`` / ``pair_<k>_1.png``;
    the ground truth is ``H_0to1 = H1 @ H0^-1``. Read the set back with :func:`load_homography_pairs` on ``out_dir``.

    Returns:
        The pairs, as :func:`read_homography_pairs` returns them.
    """
    if not image_paths:
        raise InputError("no source images for synthetic pairs")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be positive, got {num_pairs}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create folder ({exc.strerror or exc})") from exc
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(image_paths))
    out_w, out_h = int(size[0]), int(size[1])
    hconf = dict(difficulty=difficulty, translation=translation, max_angle=max_angle)
    cache: dict[int, np.ndarray] = {}
    lines = [
        "# lightmatch synthetic homography pairs: name0 name1 H_0to1 (row-major 3x3, image 0 pixels -> image 1)",
        f"# seed={seed} size={out_w}x{out_h} photometric={photometric} difficulty={difficulty}",
    ]
    pairs = []
    for k in range(num_pairs):
        idx = int(order[k % len(order)])
        if idx not in cache:
            cache[idx] = _to_float01(read_image(image_paths[idx]))
        src = cache[idx]
        h, w = src.shape[:2]
        views = []
        homs = []
        for _ in range(2):
            Hk = synthetic_homography(rng, w, h, (out_w, out_h), **hconf)
            view = cv2.warpPerspective(src, Hk, (out_w, out_h), flags=cv2.INTER_LINEAR)
            if photometric:
                view = photometric_augment(rng, view, p=photometric_p)
            views.append(view)
            homs.append(Hk)
        H_0to1 = homs[1] @ np.linalg.inv(homs[0])
        H_0to1 = H_0to1 / H_0to1[2, 2]
        names = [f"pair_{k:04d}_{i}.png" for i in range(2)]
        for name, view in zip(names, views):
            _write_png(out_dir / name, view)
        lines.append(" ".join(names + [repr(float(v)) for v in H_0to1.reshape(-1)]))
        pairs.append(HomographyPair(out_dir, names[0], names[1], H_0to1))
    pairs_path = out_dir / PAIRS_FILE
    try:
        pairs_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{pairs_path}: cannot write ({exc.strerror or exc})") from exc
    return pairs
