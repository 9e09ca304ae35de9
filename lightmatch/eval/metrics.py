"""Evaluation metrics: relative pose (SuperGlue's ``match_pairs.py --eval``) and homography (glue-factory's HPatches).

Everything here is a pure function of arrays (no models, no files, no printing). Conventions:

* keypoints are ``(N, 2)`` ``(x, y)`` pixel coordinates, the centre of the top-left pixel at (0, 0);
* ``T_0to1`` is a ``(4, 4)`` rigid transform taking points from camera 0 to camera 1 (``X1 = R X0 + t``);
* ``K`` is a ``(3, 3)`` pinhole intrinsics matrix;
* ``H_0to1`` is a ``(3, 3)`` homography mapping pixels of image 0 to image 1;
* ``matches0`` is ``(N0,)`` int: index into image 1's keypoints or -1 (hloc / :class:`lightmatch.types.Matches`).

Relative pose protocol (SuperGlue): precision is the share of matches with symmetric epipolar distance (normalised
coordinates, squared, see :func:`symmetric_epipolar_distance`) below 5e-4; matching score is the number of such
correct matches divided by the number of keypoints in image 0; the pose is estimated by
:func:`lightmatch.estimators.estimate_relative_pose` (``opencv``: SuperGlue's ``estimate_pose``); the
pose error is ``max(err_t, err_R)`` in degrees and is summarised by the AUC of its recall curve at 5/10/20 degrees.

Homography protocol (glue-factory ``eval/hpatches.py``): the error of an estimated homography is the mean distance
between the four image corners mapped by it and by the ground truth (:func:`homography_corner_error`), summarised by
the AUC at 1/3/5 px, for a robust estimate (:func:`lightmatch.estimators.estimate_homography`) and for a DLT fit
on all matches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..estimators import estimate_homography, estimate_relative_pose, normalize_with_intrinsics
from ..geometry import warp_points

POSE_AUC_THRESHOLDS = (5.0, 10.0, 20.0)
HOMOGRAPHY_AUC_THRESHOLDS = (1.0, 3.0, 5.0)
EPIPOLAR_CORRECT_THRESHOLD = 5e-4
HOMOGRAPHY_CORRECT_THRESHOLD = 3.0


# --------------------------------------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------------------------------------


def pose_auc(errors: Sequence[float] | np.ndarray, thresholds: Sequence[float]) -> list[float]:
    """Area under the recall curve of ``errors`` up to each threshold, divided by the threshold (SuperGlue).

    The errors are sorted, the recall curve ``(e_i, i / n)`` starts at ``(0, 0)``, is integrated with the trapezoid
    rule up to the threshold (the last recall held constant until the threshold) and divided by the threshold, so
    that every error at 0 gives 1 and every error above the threshold gives 0. ``inf`` marks a failure.

    Args:
        errors: ``(n,)`` non-negative errors, one per pair.
        thresholds: the thresholds, in the unit of ``errors``.
    Returns:
        One AUC in [0, 1] per threshold (``nan`` for each if ``errors`` is empty).
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64).reshape(-1), kind="stable")
    n = len(errors)
    if n == 0:
        return [float("nan")] * len(thresholds)
    recall = np.concatenate([[0.0], np.arange(1, n + 1, dtype=np.float64) / n])
    errors = np.concatenate([[0.0], errors])
    aucs = []
    for thr in thresholds:
        thr = float(thr)
        last = int(np.searchsorted(errors, thr))  # errors[:last] < thr
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        e = np.concatenate([errors[:last], [thr]])
        area = float(np.sum((e[1:] - e[:-1]) * (r[1:] + r[:-1]) / 2.0))
        aucs.append(area / thr)
    return aucs


# --------------------------------------------------------------------------------------------------------------------
# Epipolar geometry and relative pose
# --------------------------------------------------------------------------------------------------------------------


def skew(v: np.ndarray) -> np.ndarray:
    """``(3,)`` vector -> ``(3, 3)`` cross-product matrix ``[v]_x`` (``[v]_x @ w == cross(v, w)``)."""
    x, y, z = np.asarray(v, dtype=np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def essential_from_pose(T_0to1: np.ndarray) -> np.ndarray:
    """``(4, 4)`` (or ``(3, 4)``) relative pose -> ``(3, 3)`` essential matrix ``E = [t]_x R`` (``x1^T E x0 = 0``)."""
    T = np.asarray(T_0to1, dtype=np.float64)
    return skew(T[:3, 3]) @ T[:3, :3]


def symmetric_epipolar_distance(pts0: np.ndarray, pts1: np.ndarray, E: np.ndarray) -> np.ndarray:
    """SuperGlue's squared symmetric epipolar distance of normalised correspondences.

    ``d = (x1^T E x0)^2 * (1 / ((E x0)_1^2 + (E x0)_2^2) + 1 / ((E^T x1)_1^2 + (E^T x1)_2^2))``: the sum of the
    squared distances of each point to the epipolar line of the other, in normalised coordinates.

    Args:
        pts0, pts1: ``(N, 2)`` normalised coordinates (see :func:`normalize_with_intrinsics`).
        E: ``(3, 3)`` essential matrix with ``x1^T E x0 = 0``.
    Returns:
        ``(N,)`` float64 distances (squared, normalised units; SuperGlue's "correct" threshold is 5e-4).
    """
    pts0 = np.asarray(pts0, dtype=np.float64).reshape(-1, 2)
    pts1 = np.asarray(pts1, dtype=np.float64).reshape(-1, 2)
    E = np.asarray(E, dtype=np.float64)
    x0 = np.concatenate([pts0, np.ones_like(pts0[:, :1])], -1)
    x1 = np.concatenate([pts1, np.ones_like(pts1[:, :1])], -1)
    Ex0 = x0 @ E.T  # (N, 3) epipolar lines in image 1
    Etx1 = x1 @ E  # (N, 3) epipolar lines in image 0
    x1Ex0 = np.sum(x1 * Ex0, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return x1Ex0**2 * (1.0 / (Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2) + 1.0 / (Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2))


def compute_epipolar_error(
    kpts0: np.ndarray, kpts1: np.ndarray, T_0to1: np.ndarray, K0: np.ndarray, K1: np.ndarray
) -> np.ndarray:
    """Symmetric epipolar distance of pixel correspondences ``(N, 2)`` under the true pose (SuperGlue). -> ``(N,)``."""
    return symmetric_epipolar_distance(
        normalize_with_intrinsics(kpts0, K0), normalize_with_intrinsics(kpts1, K1), essential_from_pose(T_0to1)
    )


def angle_error_mat(R1: np.ndarray, R2: np.ndarray) -> float:
    """Angle in degrees of the rotation ``R1^T R2`` between two ``(3, 3)`` rotations."""
    cos = (np.trace(np.asarray(R1, dtype=np.float64).T @ np.asarray(R2, dtype=np.float64)) - 1.0) / 2.0
    return float(np.rad2deg(np.abs(np.arccos(np.clip(cos, -1.0, 1.0)))))


def angle_error_vec(v1: np.ndarray, v2: np.ndarray) -> float:
    """Angle in degrees between two ``(3,)`` vectors (``nan`` if one is zero)."""
    v1 = np.asarray(v1, dtype=np.float64).reshape(-1)
    v2 = np.asarray(v2, dtype=np.float64).reshape(-1)
    n = np.linalg.norm(v1) * np.linalg.norm(v2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.rad2deg(np.arccos(np.clip(np.dot(v1, v2) / n, -1.0, 1.0))))


def compute_pose_error(T_0to1: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Errors of an estimated pose against the true ``(4, 4)`` ``T_0to1``, in degrees (SuperGlue).

    Args:
        R: ``(3, 3)`` estimated rotation. t: ``(3,)`` estimated translation (any scale).
    Returns:
        ``(err_t, err_R)``: the angle between the translation directions, folded to ``min(err, 180 - err)`` because
        an essential matrix determines ``t`` only up to sign; the angle of the relative rotation.
    """
    T = np.asarray(T_0to1, dtype=np.float64)
    err_t = angle_error_vec(t, T[:3, 3])
    err_t = float(np.minimum(err_t, 180.0 - err_t))
    err_R = angle_error_mat(R, T[:3, :3])
    return err_t, err_R


@dataclass
class PoseResult:
    """Evaluation of one pair under the relative-pose protocol (the fields of SuperGlue's ``*_evaluation.npz``).

    Attributes:
        error_t, error_R: pose errors in degrees (``inf`` when the pose could not be estimated).
        precision: share of matches with epipolar error < 5e-4 (0 without matches).
        matching_score: number of such correct matches / number of keypoints in image 0 (0 without keypoints).
        num_correct, num_matches, num_keypoints0: counts.
        epipolar_errors: ``(M,)`` epipolar error of each match.
        num_inliers: RANSAC inliers of the estimated pose (0 on failure).
    """

    error_t: float
    error_R: float
    precision: float
    matching_score: float
    num_correct: int
    num_matches: int
    num_keypoints0: int
    epipolar_errors: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    num_inliers: int = 0

    @property
    def pose_error(self) -> float:
        """``max(error_t, error_R)``, the value the AUC is computed on."""
        return float(max(self.error_t, self.error_R))


def matched_keypoints(
    kpts0: np.ndarray, kpts1: np.ndarray, matches0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(N0, 2)``, ``(N1, 2)``, ``(N0,)`` -> the matched ``(M, 2)`` coordinates in both images."""
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    m0 = np.asarray(matches0).reshape(-1).astype(np.int64)
    valid = m0 > -1
    return kpts0[valid], kpts1[m0[valid]]


def evaluate_pose_pair(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches0: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    ransac_thresh: float = 1.0,
    seed: Optional[int] = None,
    estimator: str = "opencv",
) -> PoseResult:
    """The per-pair block of ``match_pairs.py --eval``, with ``K0``, ``K1``, ``T_0to1`` already adapted to the
    resized/rotated images (see :func:`lightmatch.eval.pose_data.adapt_pair_to_images`).

    Args:
        kpts0: ``(N0, 2)``, kpts1: ``(N1, 2)`` keypoints; matches0: ``(N0,)`` index into ``kpts1`` or -1.
        ransac_thresh: threshold in pixels, seed and estimator of
            :func:`~lightmatch.estimators.estimate_relative_pose` (``opencv``: SuperGlue's protocol).
    """
    mkpts0, mkpts1 = matched_keypoints(kpts0, kpts1, matches0)
    n_kpts0 = int(np.asarray(kpts0).reshape(-1, 2).shape[0])
    epi_errs = compute_epipolar_error(mkpts0, mkpts1, T_0to1, K0, K1)
    correct = epi_errs < EPIPOLAR_CORRECT_THRESHOLD
    num_correct = int(np.sum(correct))
    precision = float(np.mean(correct)) if len(correct) > 0 else 0.0
    matching_score = num_correct / n_kpts0 if n_kpts0 > 0 else 0.0
    est = estimate_relative_pose(mkpts0, mkpts1, K0, K1, estimator, ransac_thresh, seed=seed)
    if est is None:
        err_t, err_R, n_inl = math.inf, math.inf, 0
    else:
        err_t, err_R = compute_pose_error(T_0to1, est.R, est.t)
        n_inl = int(est.inliers.sum())
    return PoseResult(
        error_t=float(err_t),
        error_R=float(err_R),
        precision=precision,
        matching_score=float(matching_score),
        num_correct=num_correct,
        num_matches=int(len(mkpts0)),
        num_keypoints0=n_kpts0,
        epipolar_errors=epi_errs,
        num_inliers=n_inl,
    )


def _field(item: Any, name: str) -> float:
    if isinstance(item, Mapping):
        return float(item[name])
    return float(getattr(item, name))


def relative_pose_summary(
    per_pair: Iterable[PoseResult | Mapping[str, float]],
    thresholds: Sequence[float] = POSE_AUC_THRESHOLDS,
) -> dict[str, float]:
    """The final table of ``match_pairs.py --eval``, all in percent.

    Args:
        per_pair: :class:`PoseResult` objects, or mappings with ``error_t``, ``error_R``, ``precision`` and
            ``matching_score``.
    Returns:
        ``{"auc@5": .., "auc@10": .., "auc@20": .., "precision": .., "matching_score": .., "num_pairs": n}``:
        AUC of ``max(error_t, error_R)`` at each threshold (degrees), the mean over pairs of the per-pair precision
        (share of matches with epipolar error < 5e-4) and of the per-pair matching score (correct matches /
        keypoints in image 0), each times 100. With no pairs every value but ``num_pairs`` is ``nan``.
    """
    items = list(per_pair)
    errors = [max(_field(p, "error_t"), _field(p, "error_R")) for p in items]
    aucs = pose_auc(errors, thresholds)
    out: dict[str, float] = {f"auc@{_fmt(t)}": 100.0 * a for t, a in zip(thresholds, aucs)}
    nan = float("nan")
    out["precision"] = 100.0 * float(np.mean([_field(p, "precision") for p in items])) if items else nan
    out["matching_score"] = 100.0 * float(np.mean([_field(p, "matching_score") for p in items])) if items else nan
    out["num_pairs"] = len(items)
    return out


def _fmt(t: float) -> str:
    return f"{int(t)}" if float(t).is_integer() else f"{t:g}"


# --------------------------------------------------------------------------------------------------------------------
# Homographies
# --------------------------------------------------------------------------------------------------------------------


def homography_corner_error(
    H_est: Optional[np.ndarray], H_gt: np.ndarray, image_size: Sequence[float]
) -> float:
    """Mean distance in pixels between the corners of image 0 mapped by ``H_est`` and by ``H_gt`` (glue-factory).

    The corners are ``(0, 0), (W, 0), (W, H), (0, H)`` with ``image_size = (W, H)`` of image 0, as in glue-factory's
    ``homography_corner_error``. ``H_est = None`` (estimation failed) gives ``inf``; so does a non-finite result.
    """
    if H_est is None:
        return math.inf
    W, Hh = float(image_size[0]), float(image_size[1])
    corners = np.array([[0.0, 0.0], [W, 0.0], [W, Hh], [0.0, Hh]])
    d = np.linalg.norm(warp_points(corners, H_est) - warp_points(corners, H_gt), axis=-1)
    err = float(np.mean(d))
    return err if math.isfinite(err) else math.inf


def symmetric_homography_error(pts0: np.ndarray, pts1: np.ndarray, H_0to1: np.ndarray) -> np.ndarray:
    """glue-factory's ``sym_homography_error``: ``(|H x0 - x1| + |H^-1 x1 - x0|) / 2``.

    ``pts0``, ``pts1``: ``(N, 2)`` matched pixels; returns ``(N,)`` distances in pixels.
    """
    pts0 = np.asarray(pts0, dtype=np.float64).reshape(-1, 2)
    pts1 = np.asarray(pts1, dtype=np.float64).reshape(-1, 2)
    H = np.asarray(H_0to1, dtype=np.float64)
    d01 = np.linalg.norm(warp_points(pts0, H) - pts1, axis=-1)
    d10 = np.linalg.norm(warp_points(pts1, np.linalg.inv(H)) - pts0, axis=-1)
    return (d01 + d10) / 2.0


def gt_matches_from_homography(
    kpts0: np.ndarray, kpts1: np.ndarray, H_0to1: np.ndarray, threshold: float = HOMOGRAPHY_CORRECT_THRESHOLD
) -> np.ndarray:
    """Ground-truth matches of keypoints under a homography, as glue-factory's ``gt_matches_from_homography``.

    Keypoint ``i`` of image 0 and ``j`` of image 1 are a ground-truth match when they are mutual nearest neighbours
    under ``d(i, j) = max(|H x0_i - x1_j|, |H^-1 x1_j - x0_i|)`` and ``d(i, j) < threshold`` pixels.

    Returns:
        ``(N0,)`` int64: the matching index in image 1, or -1 for a keypoint that is not matchable.
    """
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    gt = -np.ones(len(kpts0), dtype=np.int64)
    if len(kpts0) == 0 or len(kpts1) == 0:
        return gt
    H = np.asarray(H_0to1, dtype=np.float64)
    p01 = warp_points(kpts0, H)
    p10 = warp_points(kpts1, np.linalg.inv(H))
    dist0 = np.sum((p01[:, None] - kpts1[None]) ** 2, -1)
    dist1 = np.sum((kpts0[:, None] - p10[None]) ** 2, -1)
    dist = np.nan_to_num(np.maximum(dist0, dist1), nan=np.inf)
    nn0 = np.argmin(dist, 1)
    nn1 = np.argmin(dist, 0)
    idx0 = np.arange(len(kpts0))
    ok = (nn1[nn0] == idx0) & (dist[idx0, nn0] < threshold**2)
    gt[ok] = nn0[ok]
    return gt


def homography_match_metrics(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches0: np.ndarray,
    H_0to1: np.ndarray,
    threshold: float = HOMOGRAPHY_CORRECT_THRESHOLD,
) -> dict[str, float]:
    """Precision and recall of matches under a known homography.

    * precision: share of predicted matches whose :func:`symmetric_homography_error` is below ``threshold`` px
      (glue-factory's ``prec@3px``); 0 without matches.
    * recall: number of ground-truth-matchable keypoints of image 0 (see :func:`gt_matches_from_homography`: a
      mutual nearest neighbour within ``threshold`` px exists in image 1) whose predicted match is exactly that
      keypoint, divided by the number of ground-truth-matchable keypoints of image 0 (glue-factory's
      ``gt_match_recall``); 0 when no keypoint is matchable.

    Args:
        kpts0: ``(N0, 2)``, kpts1: ``(N1, 2)``; matches0: ``(N0,)`` index into ``kpts1`` or -1; H_0to1: ``(3, 3)``.
    Returns:
        ``{"precision", "recall", "num_matches", "num_correct", "num_matchable", "num_recalled"}``.
    """
    m0 = np.asarray(matches0).reshape(-1).astype(np.int64)
    mkpts0, mkpts1 = matched_keypoints(kpts0, kpts1, m0)
    err = symmetric_homography_error(mkpts0, mkpts1, H_0to1)
    correct = np.nan_to_num(err, nan=np.inf) < threshold
    gt = gt_matches_from_homography(kpts0, kpts1, H_0to1, threshold)
    matchable = gt > -1
    recalled = matchable & (m0 == gt)
    n_matchable = int(matchable.sum())
    return {
        "precision": float(correct.mean()) if len(correct) else 0.0,
        "recall": float(recalled.sum()) / n_matchable if n_matchable else 0.0,
        "num_matches": int(len(mkpts0)),
        "num_correct": int(correct.sum()),
        "num_matchable": n_matchable,
        "num_recalled": int(recalled.sum()),
    }


GLUEFACTORY_HOMOGRAPHY = {"max_iters": 3000, "confidence": 0.995}  # glue-factory's OpenCV estimator settings


def estimate_homography_dlt(pts0: np.ndarray, pts1: np.ndarray) -> Optional[np.ndarray]:
    """Homography fitted to all matches: ``cv2.findHomography(..., method=0)`` (normalised DLT + LM refinement).

    Note: glue-factory's ``H_error_dlt`` uses kornia's score-weighted DLT instead; the two agree on clean matches
    and differ in how outliers pull the fit. Returns ``(3, 3)`` or ``None`` with fewer than 4 matches or on failure.
    """
    pts0 = np.asarray(pts0, dtype=np.float64).reshape(-1, 2)
    pts1 = np.asarray(pts1, dtype=np.float64).reshape(-1, 2)
    if len(pts0) < 4 or len(pts0) != len(pts1):
        return None
    try:
        H, _ = cv2.findHomography(pts0, pts1, 0)
    except cv2.error:
        return None
    if H is None or not np.all(np.isfinite(H)):
        return None
    return H


@dataclass
class HomographyResult:
    """Evaluation of one pair under the homography protocol.

    Attributes:
        error_ransac, error_dlt: :func:`homography_corner_error` in pixels (``inf`` on failure).
        precision, recall: see :func:`homography_match_metrics` (at 3 px by default).
        num_matches, num_correct, num_matchable, num_inliers: counts.
    """

    error_ransac: float
    error_dlt: float
    precision: float
    recall: float
    num_matches: int
    num_correct: int
    num_matchable: int
    num_inliers: int = 0


def evaluate_homography_pair(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches0: np.ndarray,
    H_0to1: np.ndarray,
    image_size0: Sequence[float],
    estimator: str = "opencv",
    ransac_thresh: float = 0.5,
    correct_thresh: float = HOMOGRAPHY_CORRECT_THRESHOLD,
    seed: Optional[int] = 0,
) -> HomographyResult:
    """All homography metrics of one pair (keypoints in the same, possibly resized, frame as ``H_0to1``).

    Args:
        kpts0: ``(N0, 2)``, kpts1: ``(N1, 2)``; matches0: ``(N0,)``; H_0to1: ``(3, 3)``; image_size0: ``(W, H)``.
        estimator, ransac_thresh (px), seed: :func:`~lightmatch.estimators.estimate_homography`, with
            glue-factory's 3000 iterations and confidence 0.995 (``GLUEFACTORY_HOMOGRAPHY``; its official HPatches
            setting is ``opencv`` at 0.5 px). correct_thresh: px, for precision/recall.
    """
    mkpts0, mkpts1 = matched_keypoints(kpts0, kpts1, matches0)
    robust = estimate_homography(mkpts0, mkpts1, estimator, ransac_thresh, seed=seed, **GLUEFACTORY_HOMOGRAPHY)
    err_r = homography_corner_error(None if robust is None else robust.model, H_0to1, image_size0)
    err_d = homography_corner_error(estimate_homography_dlt(mkpts0, mkpts1), H_0to1, image_size0)
    m = homography_match_metrics(kpts0, kpts1, matches0, H_0to1, correct_thresh)
    return HomographyResult(
        error_ransac=err_r,
        error_dlt=err_d,
        precision=m["precision"],
        recall=m["recall"],
        num_matches=m["num_matches"],
        num_correct=m["num_correct"],
        num_matchable=m["num_matchable"],
        num_inliers=0 if robust is None else int(robust.inliers.sum()),
    )


def homography_summary(
    per_pair: Iterable[HomographyResult | Mapping[str, float]],
    thresholds: Sequence[float] = HOMOGRAPHY_AUC_THRESHOLDS,
) -> dict[str, float]:
    """Summary over pairs, all in percent.

    Returns:
        ``{"auc_ransac@1px", "auc_ransac@3px", "auc_ransac@5px", "auc_dlt@1px", ..., "precision", "recall",
        "median_precision", "num_pairs"}``: AUC (:func:`pose_auc`) of the corner errors, mean over pairs of the
        per-pair precision and recall (glue-factory prints the median precision as ``mprec@3px``; it is given too).
    """
    items = list(per_pair)
    out: dict[str, float] = {}
    for key in ("ransac", "dlt"):
        aucs = pose_auc([_field(p, f"error_{key}") for p in items], thresholds)
        out.update({f"auc_{key}@{_fmt(t)}px": 100.0 * a for t, a in zip(thresholds, aucs)})
    nan = float("nan")
    prec = [_field(p, "precision") for p in items]
    out["precision"] = 100.0 * float(np.mean(prec)) if items else nan
    out["recall"] = 100.0 * float(np.mean([_field(p, "recall") for p in items])) if items else nan
    out["median_precision"] = 100.0 * float(np.median(prec)) if items else nan
    out["num_pairs"] = len(items)
    return out
