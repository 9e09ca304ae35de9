"""Geometric verification of matches: a robust homography, fundamental or essential matrix and its inliers.

All models use OpenCV's USAC with MAGSAC++ scoring and sigma-consensus local optimisation, configured through
``cv2.UsacParams`` with exactly the settings of the ``cv2.USAC_MAGSAC`` flag. The flag always starts OpenCV's USAC
random generator from state 0 (``cv2.setRNGSeed`` does not reach it), so the seed is passed as
``UsacParams.randomGeneratorState`` instead: the same inputs and seed give the same inliers, and ``seed=0`` gives
the same result as ``cv2.USAC_MAGSAC``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import cv2
import numpy as np
import torch

from ..errors import ConfigError
from ..types import Features, Matches

MODELS = ("homography", "fundamental", "essential")
# Fewest matches each solver needs: 4 (H), 8 (F: USAC samples 7, but 7 points are not enough to pick one of
# the up to three 7-point solutions), 5 (E).
MIN_MATCHES = {"homography": 4, "fundamental": 8, "essential": 5}
FOCAL_FACTOR = 1.2  # focal prior, as COLMAP/hloc: 1.2 * max(W, H)


class Verification(NamedTuple):
    """Result of :func:`verify_matches`.

    Attributes:
        inliers: ``(M,)`` bool, one flag per input match.
        model: ``(3, 3)`` float64 H (maps image 0 to image 1), F or E (``x1^T F x0 = 0``), or None when there were
            too few matches or the estimation failed.
    """

    inliers: np.ndarray
    model: Optional[np.ndarray]


def _array(a: np.ndarray | torch.Tensor, dtype) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def default_intrinsics(image_size: tuple[int, int]) -> np.ndarray:
    """``(3, 3)`` K guessed from an image size ``(W, H)``: focal ``1.2 * max(W, H)``, principal point at the centre.

    The centre is ``((W - 1) / 2, (H - 1) / 2)`` in lightmatch's convention (centre of the top-left pixel at 0).
    """
    w, h = float(image_size[0]), float(image_size[1])
    if not (w > 0 and h > 0):
        raise ConfigError(f"cannot guess intrinsics from image size {tuple(image_size)}; pass K0 and K1")
    f = FOCAL_FACTOR * max(w, h)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def _usac_params(model: str, threshold: float, confidence: float, max_iters: int, seed: int) -> cv2.UsacParams:
    """The settings ``cv2.USAC_MAGSAC`` uses (OpenCV's ``usac::setParameters``), with our seed."""
    params = cv2.UsacParams()
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MAGSAC
    params.loMethod = cv2.LOCAL_OPTIM_SIGMA
    params.loSampleSize = 75 if model == "homography" else 50
    params.loIterations = 15 if model == "homography" else 10
    params.isParallel = False
    params.threshold = float(threshold)
    params.confidence = float(confidence)
    params.maxIterations = int(max_iters)
    params.randomGeneratorState = int(seed) % (2**31)
    return params


def verify_matches(
    kpts0: np.ndarray | torch.Tensor,
    kpts1: np.ndarray | torch.Tensor,
    matches: np.ndarray | torch.Tensor,
    model: str = "homography",
    threshold: float = 3.0,
    confidence: float = 0.9999,
    max_iters: int = 10000,
    seed: int = 0,
    K0: Optional[np.ndarray] = None,
    K1: Optional[np.ndarray] = None,
    size0: Optional[tuple[int, int]] = None,
    size1: Optional[tuple[int, int]] = None,
) -> Verification:
    """Robustly fit ``model`` to matched keypoints and flag the matches consistent with it.

    Args:
        kpts0: ``(N0, 2)`` keypoints ``(x, y)`` of image 0, in pixels.
        kpts1: ``(N1, 2)`` keypoints of image 1.
        matches: ``(M, 2)`` integer index pairs ``(i0, i1)`` (as :meth:`Matches.pairs`).
        model: ``'homography'``, ``'fundamental'`` or ``'essential'``.
        threshold: inlier threshold in pixels: reprojection error for H, Sampson distance for F, symmetric
            geometric error for E (OpenCV converts it to normalised coordinates with the cameras' focal lengths).
            3 px is OpenCV's default for H and F.
        confidence: RANSAC confidence, in (0, 1).
        max_iters: most RANSAC iterations.
        seed: state of the USAC random generator; same inputs and seed give the same result.
        K0, K1: ``(3, 3)`` intrinsics for ``'essential'``; where missing, guessed from ``size0``/``size1`` ``(W, H)``
            by :func:`default_intrinsics` (focal ``1.2 * max(W, H)``, principal point at the centre).

    Returns:
        :class:`Verification` ``(inliers (M,) bool, model (3, 3) or None)``. Fewer matches than the model's minimum
        (4 for H, 8 for F, 5 for E), degenerate configurations, or a failed estimation give all-False inliers and
        ``model=None``, never an exception.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown verification model {model!r}; choose one of {', '.join(MODELS)}")
    kp0 = _array(kpts0, np.float64).reshape(-1, 2)
    kp1 = _array(kpts1, np.float64).reshape(-1, 2)
    m = _array(matches, np.int64).reshape(-1, 2)
    if m.size and (m.min() < 0 or m[:, 0].max() >= len(kp0) or m[:, 1].max() >= len(kp1)):
        raise ValueError(f"match indices out of range for {len(kp0)} and {len(kp1)} keypoints")
    if model == "essential":
        if K0 is None:
            if size0 is None:
                raise ConfigError("essential-matrix verification needs intrinsics K0 or the image size size0")
            K0 = default_intrinsics(size0)
        if K1 is None:
            if size1 is None:
                raise ConfigError("essential-matrix verification needs intrinsics K1 or the image size size1")
            K1 = default_intrinsics(size1)
        K0 = np.asarray(K0, dtype=np.float64).reshape(3, 3)
        K1 = np.asarray(K1, dtype=np.float64).reshape(3, 3)

    fail = Verification(np.zeros(len(m), dtype=bool), None)
    if len(m) < MIN_MATCHES[model]:
        return fail
    p0 = np.ascontiguousarray(kp0[m[:, 0]])
    p1 = np.ascontiguousarray(kp1[m[:, 1]])
    if not (np.isfinite(p0).all() and np.isfinite(p1).all()):
        return fail
    params = _usac_params(model, threshold, confidence, max_iters, seed)
    try:
        if model == "homography":
            M, mask = cv2.findHomography(p0, p1, params)
        elif model == "fundamental":
            M, mask = cv2.findFundamentalMat(p0, p1, params)
        else:
            M, mask = cv2.findEssentialMat(p0, p1, K0, K1, None, None, params)
    except cv2.error:
        return fail
    if M is None or mask is None or M.size < 9 or not np.isfinite(M).all():
        return fail
    inliers = mask.reshape(-1).astype(bool)
    if len(inliers) != len(m):
        return fail
    return Verification(inliers, np.asarray(M, dtype=np.float64)[:3, :3].copy())


def verify_pair(feats0: Features, feats1: Features, matches: Matches, model: str = "homography",
                **kwargs) -> np.ndarray:
    """Verify a pair's matches; returns the ``(N0,)`` bool ``inliers`` aligned with ``matches.matches0``.

    This is the layout :func:`lightmatch.io.h5.put_matches` stores. For ``'essential'`` without ``K0``/``K1`` the
    image sizes of the features are used. ``kwargs`` go to :func:`verify_matches`.
    """
    pairs = matches.pairs()
    if model == "essential":
        kwargs.setdefault("size0", feats0.image_size)
        kwargs.setdefault("size1", feats1.image_size)
    result = verify_matches(feats0.keypoints, feats1.keypoints, pairs, model=model, **kwargs)
    inliers0 = np.zeros(int(matches.matches0.shape[0]), dtype=bool)
    inliers0[pairs[:, 0]] = result.inliers
    return inliers0
