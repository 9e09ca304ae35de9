"""Geometric verification of matches: a robust homography, fundamental or essential matrix and its inliers.

The estimation itself is :mod:`lightmatch.estimators` (``opencv``, ``magsac``, ``poselib``, ``colmap``); the default
is ``magsac``: OpenCV's USAC with MAGSAC++ scoring, seeded through ``UsacParams.randomGeneratorState``, so that the
same inputs and seed give the same inliers and ``seed=0`` gives the same result as the ``cv2.USAC_MAGSAC`` flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch

from ..defaults import (
    VERIFY_CONFIDENCE,
    VERIFY_ESTIMATOR,
    VERIFY_MAX_ITERS,
    VERIFY_MODEL,
    VERIFY_SEED,
    VERIFY_THRESHOLD_PX,
)
from ..errors import ConfigError
from ..estimators import check_estimator, estimate_fundamental, estimate_homography, estimate_relative_pose
from ..types import Features, Matches

MODELS = ("homography", "fundamental", "essential")
# Fewest matches each solver needs: 4 (H), 8 (F: USAC samples 7, but 7 points are not enough to pick one of
# the up to three 7-point solutions), 5 (E).
MIN_MATCHES = {"homography": 4, "fundamental": 8, "essential": 5}
FOCAL_FACTOR = 1.2  # focal prior, as COLMAP/hloc: 1.2 * max(W, H)


@dataclass
class VerifyOptions:
    """Geometric verification of every pair of a batch (:func:`verify_pair`); see :func:`verify_matches`."""

    model: str = VERIFY_MODEL
    threshold: float = VERIFY_THRESHOLD_PX
    confidence: float = VERIFY_CONFIDENCE
    seed: int = VERIFY_SEED
    max_iters: int = VERIFY_MAX_ITERS
    estimator: str = VERIFY_ESTIMATOR

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown verification model {self.model!r}; choose one of {', '.join(MODELS)}")
        if not self.threshold > 0:
            raise ConfigError(f"verification threshold must be > 0 px, got {self.threshold}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"verification confidence must be in (0, 1), got {self.confidence}")
        self.estimator = check_estimator(self.estimator)

    def inliers(self, feats0: Features, feats1: Features, matches: Matches) -> np.ndarray:
        """:func:`verify_pair` with these settings: the ``(N0,)`` bool inliers aligned with ``matches.matches0``."""
        return verify_pair(feats0, feats1, matches, self.model, threshold=self.threshold, confidence=self.confidence,
                           seed=self.seed, max_iters=self.max_iters, estimator=self.estimator)


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


def verify_matches(
    kpts0: np.ndarray | torch.Tensor,
    kpts1: np.ndarray | torch.Tensor,
    matches: np.ndarray | torch.Tensor,
    model: str = "homography",
    threshold: float = 3.0,
    confidence: float = 0.9999,
    max_iters: int = 10000,
    seed: int = 0,
    estimator: str = "magsac",
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
        threshold: inlier threshold in pixels: reprojection error for H, Sampson / epipolar distance for F and E
            (for E converted with the mean focal length). 3 px is OpenCV's default for H and F.
        confidence: RANSAC confidence, in (0, 1).
        max_iters: most RANSAC iterations.
        seed: random seed; same inputs and seed give the same result.
        estimator: ``opencv``, ``magsac`` (default), ``poselib`` or ``colmap`` (:mod:`lightmatch.estimators`).
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
    kwargs = {"estimator": estimator, "threshold": threshold, "confidence": confidence, "max_iters": max_iters,
              "seed": seed}
    if model == "homography":
        estimate = estimate_homography(p0, p1, **kwargs)
    elif model == "fundamental":
        estimate = estimate_fundamental(p0, p1, **kwargs)
    else:
        pose = estimate_relative_pose(p0, p1, K0, K1, **kwargs)
        estimate = None if pose is None else (pose.essential(), pose.inliers)
    if estimate is None:
        return fail
    return Verification(estimate[1], estimate[0])


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
