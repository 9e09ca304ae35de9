"""Robust two-view estimation behind one switch: relative pose, homography and fundamental matrix.

Four back ends, chosen by name (``ESTIMATORS``); every threshold is in pixels and every estimate repeats exactly
(seeded, or deterministic for ``opencv``):

* ``opencv``: OpenCV RANSAC. For relative pose this is SuperGlue's ``estimate_pose`` exactly (see
  :func:`estimate_relative_pose`); for homographies glue-factory's OpenCV estimator. Deterministic and blind to the
  seed: OpenCV's RANSAC (``RANSACPointSetRegistrator``) draws from its own generator with a fixed state, which
  ``cv2.setRNGSeed`` does not reach.
* ``magsac``: OpenCV USAC with MAGSAC++ scoring, sigma-consensus local optimisation and MAGSAC polishing, the
  settings of the ``cv2.USAC_MAGSAC`` flag. The flag always starts USAC's generator from state 0 (``cv2.setRNGSeed``
  does not reach it), so the seed goes in as ``UsacParams.randomGeneratorState``; seed 0 equals the flag.
* ``poselib``: PoseLib's LO-RANSAC followed by bundle refinement (Cauchy loss) on the inliers (extra
  ``lightmatch[poselib]``). Seeded by its ``seed`` option.
* ``colmap``: pycolmap's LO-RANSAC (``estimate_relative_pose``, tangent Sampson error) then
  ``refine_relative_pose`` on the final inliers; ``estimate_homography_matrix`` / ``estimate_fundamental_matrix``
  for the others (extra ``lightmatch[colmap]``). Seeded by ``RANSACOptions.random_seed``.

Thresholds: for relative pose the epipolar error in pixels (OpenCV: divided by the mean focal length, as SuperGlue
does; PoseLib and COLMAP convert with the cameras); for homographies the reprojection error in pixels; for the
fundamental matrix the Sampson / epipolar distance in pixels. Keypoints follow lightmatch's convention (centre of the
top-left pixel at (0, 0)); intrinsics must use the same one, so no half-pixel shift is needed for any back end.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple, Optional

import cv2
import numpy as np

from .errors import ConfigError

ESTIMATORS = ("opencv", "magsac", "poselib", "colmap")
ALIASES = {"ransac": "opencv", "usac_magsac": "magsac"}  # earlier names of eval homography's --estimator
_EXTRAS = {"poselib": ("poselib", "poselib"), "colmap": ("pycolmap", "colmap")}  # estimator -> (module, extra)
DEFAULT_CONFIDENCE = {"opencv": 0.99999, "magsac": 0.99999, "poselib": 0.9999, "colmap": 0.9999}


class RelativePose(NamedTuple):
    """A relative pose; unpacks like SuperGlue's ``(R, t, inliers)``.

    Attributes:
        R: ``(3, 3)`` rotation from camera 0 to camera 1. t: ``(3,)`` unit translation direction (``X1 = R X0 + t``).
        inliers: ``(M,)`` bool, one flag per correspondence.
    """

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray

    def essential(self) -> np.ndarray:
        """``(3, 3)`` essential matrix ``E = [t]_x R`` (``x1^T E x0 = 0``)."""
        x, y, z = np.asarray(self.t, dtype=np.float64).reshape(3)
        return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]) @ np.asarray(self.R, dtype=np.float64)


class Estimate(NamedTuple):
    """A ``(3, 3)`` model (homography ``x1 ~ H x0`` or fundamental ``x1^T F x0 = 0``) and its ``(M,)`` bool inliers."""

    model: np.ndarray
    inliers: np.ndarray


def check_estimator(name: str) -> str:
    """The canonical estimator name (``ransac`` is ``opencv``); a one-line :class:`ConfigError` when it is unknown
    or its optional package is not installed (naming the extra that installs it)."""
    name = ALIASES.get(name, name)
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator '{name}': choose one of {', '.join(ESTIMATORS)}")
    _backend(name)
    return name


def _backend(name: str) -> Any:
    if name not in _EXTRAS:
        return cv2
    module, extra = _EXTRAS[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--estimator {name} needs the '{module}' package: pip install 'lightmatch[{extra}]'") \
            from None


def _points(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1, 2))


def _valid(pts0: np.ndarray, pts1: np.ndarray, minimum: int) -> bool:
    return len(pts0) >= minimum and len(pts0) == len(pts1) and bool(np.isfinite(pts0).all() and np.isfinite(pts1).all())


def _seed(seed: Optional[int]) -> int:
    return 0 if seed is None else int(seed) % (2**31)


def usac_params(model: str, threshold: float, confidence: float, max_iters: Optional[int],
                seed: Optional[int]) -> cv2.UsacParams:
    """The settings ``cv2.USAC_MAGSAC`` uses (OpenCV's ``usac::setParameters``) with our seed, threshold,
    confidence and iteration cap (``None``: 10000)."""
    params = cv2.UsacParams()
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MAGSAC
    params.loMethod = cv2.LOCAL_OPTIM_SIGMA
    params.loSampleSize = 75 if model == "homography" else 50
    params.loIterations = 15 if model == "homography" else 10
    params.isParallel = False
    params.threshold = float(threshold)
    params.confidence = float(confidence)
    params.maxIterations = 10000 if max_iters is None else int(max_iters)
    params.randomGeneratorState = _seed(seed)
    return params


def _ransac_options(estimator: str, key: str, threshold: float, confidence: float, max_iters: Optional[int],
                    seed: Optional[int]) -> Any:
    """PoseLib's ransac dict or pycolmap's ``RANSACOptions``."""
    if estimator == "poselib":
        opts: dict[str, Any] = {key: float(threshold), "success_prob": float(confidence), "seed": _seed(seed)}
        if max_iters is not None:
            opts.update(max_iterations=int(max_iters), min_iterations=min(1000, int(max_iters)))
        return opts
    pycolmap = _backend("colmap")
    opts = pycolmap.RANSACOptions()
    opts.max_error = float(threshold)
    opts.confidence = float(confidence)
    opts.random_seed = -1 if seed is None else _seed(seed)
    if max_iters is not None:
        opts.max_num_trials = int(max_iters)
        opts.min_num_trials = min(opts.min_num_trials, int(max_iters))
    return opts


def _mask(mask: Any, n: int) -> Optional[np.ndarray]:
    inliers = np.asarray(mask).reshape(-1).astype(bool)
    return inliers if len(inliers) == n else None


# --------------------------------------------------------------------------------------------------------------------
# Relative pose
# --------------------------------------------------------------------------------------------------------------------


def normalize_with_intrinsics(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``(N, 2)`` pixels -> ``(N, 2)`` normalised image coordinates ``((x - cx) / fx, (y - cy) / fy)``.

    Like SuperGlue, the skew term of ``K`` is ignored.
    """
    kpts = np.asarray(kpts, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64)
    return (kpts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def _pose_opencv(pts0: np.ndarray, pts1: np.ndarray, norm_thresh: float, confidence: float,
                 max_iters: Optional[int], seed: Optional[int], usac: bool) -> Optional[RelativePose]:
    """Essential matrix on normalised points, then ``recoverPose`` over every candidate (see
    :func:`estimate_relative_pose` for the two deliberate details of SuperGlue's protocol)."""
    try:
        if usac:
            E, mask = cv2.findEssentialMat(pts0, pts1, np.eye(3), np.eye(3), None, None,
                                           usac_params("essential", norm_thresh, confidence, max_iters, seed))
        else:
            kwargs = {} if max_iters is None else {"maxIters": int(max_iters)}
            E, mask = cv2.findEssentialMat(pts0, pts1, np.eye(3), threshold=norm_thresh, prob=confidence,
                                           method=cv2.RANSAC, **kwargs)
    except cv2.error:
        return None
    if E is None or mask is None or E.shape[0] < 3 or E.shape[0] % 3 or E.shape[1] != 3 or len(mask) != len(pts0):
        return None
    ransac_inliers = mask.ravel() > 0
    best_num_inliers = 0
    best: Optional[RelativePose] = None
    for k in range(E.shape[0] // 3):
        try:
            n, R, t, _ = cv2.recoverPose(E[3 * k: 3 * k + 3], pts0, pts1, np.eye(3), mask=mask)
        except cv2.error:
            continue
        if n > best_num_inliers:
            best_num_inliers = n
            # SuperGlue keeps the shared mask as it is right after this candidate; USAC keeps its own inliers
            best = RelativePose(R, t[:, 0], ransac_inliers if usac else mask.ravel() > 0)
    return best


def _pose_poselib(pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, options: dict
                  ) -> Optional[RelativePose]:
    poselib = _backend("poselib")
    cams = [poselib.Camera("PINHOLE", [K[0, 0], K[1, 1], K[0, 2], K[1, 2]], int(2 * K[0, 2] + 1),
                           int(2 * K[1, 2] + 1)) for K in (K0, K1)]
    try:
        pose, info = poselib.estimate_relative_pose(pts0, pts1, cams[0], cams[1], options, {})
    except (RuntimeError, ValueError):
        return None
    inliers = _mask(info.get("inliers", []), len(pts0))
    t = np.asarray(pose.t, dtype=np.float64)
    if inliers is None or not inliers.any() or not np.isfinite(t).all() or np.linalg.norm(t) == 0:
        return None
    return RelativePose(np.asarray(pose.R, dtype=np.float64), t / np.linalg.norm(t), inliers)


def _colmap_camera(K: np.ndarray) -> Any:
    pycolmap = _backend("colmap")
    return pycolmap.Camera(model="PINHOLE", width=int(2 * K[0, 2] + 1), height=int(2 * K[1, 2] + 1),
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])


def _pose_colmap(pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, options: Any
                 ) -> Optional[RelativePose]:
    pycolmap = _backend("colmap")
    cam0, cam1 = _colmap_camera(K0), _colmap_camera(K1)
    result = pycolmap.estimate_relative_pose(cam0, pts0, cam1, pts1, options)
    if not result:
        return None
    inliers = _mask(result["inlier_mask"], len(pts0))
    if inliers is None:
        return None
    pose = result["cam2_from_cam1"]
    refined = pycolmap.refine_relative_pose(pose, cam0, pts0, cam1, pts1, inliers.reshape(-1, 1))
    if refined:
        pose = refined["cam2_from_cam1"]
    t = np.asarray(pose.translation, dtype=np.float64)
    if not np.isfinite(t).all() or np.linalg.norm(t) == 0:
        return None
    return RelativePose(np.asarray(pose.rotation.matrix(), dtype=np.float64), t / np.linalg.norm(t), inliers)


def estimate_relative_pose(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    estimator: str = "opencv",
    threshold: float = 1.0,
    confidence: Optional[float] = None,
    max_iters: Optional[int] = None,
    seed: Optional[int] = 0,
) -> Optional[RelativePose]:
    """Relative pose of two calibrated views from matched keypoints.

    ``opencv`` is SuperGlue's ``estimate_pose``: the points are normalised with their intrinsics,
    ``cv2.findEssentialMat`` (``RANSAC``, identity camera) runs with threshold ``threshold / f_mean`` and
    ``cv2.recoverPose`` on every ``3 x 3`` candidate keeps the one with most points passing the cheirality check.
    Two details reproduce the reference numbers and are deliberate: ``f_mean`` is the mean of ``K0[0, 0]`` and
    ``K1[1, 1]``; and SuperGlue's ``recoverPose(E, p0, p1, I, 1e9, mask=mask)`` resolves, in OpenCV's Python
    bindings, to the overload without a distance threshold, so the cheirality check uses OpenCV's default distance
    threshold (50) and narrows one shared RANSAC mask in place; the returned inliers are that mask right after the
    kept candidate. ``magsac`` does the same with USAC MAGSAC++ and returns its own inliers. ``poselib`` and
    ``colmap``: see the module docstring.

    Args:
        kpts0, kpts1: ``(M, 2)`` matched pixel coordinates. K0, K1: ``(3, 3)`` intrinsics.
        estimator: one of ``ESTIMATORS``. threshold: inlier threshold in pixels (epipolar / Sampson error).
        confidence: RANSAC confidence (``None``: ``DEFAULT_CONFIDENCE``; SuperGlue's 0.99999 for OpenCV).
        max_iters: most RANSAC iterations (``None``: the library's default).
        seed: random seed; the same inputs and seed give the same pose (``None``: COLMAP random, the others 0;
            ``opencv`` is deterministic and ignores it).
    Returns:
        A :class:`RelativePose`, or ``None`` with fewer than 5 matches or when estimation fails.
    """
    estimator = check_estimator(estimator)
    pts0, pts1 = _points(kpts0), _points(kpts1)
    if not _valid(pts0, pts1, 5):
        return None
    K0 = np.asarray(K0, dtype=np.float64).reshape(3, 3)
    K1 = np.asarray(K1, dtype=np.float64).reshape(3, 3)
    conf = DEFAULT_CONFIDENCE[estimator] if confidence is None else float(confidence)
    if estimator in ("opencv", "magsac"):
        f_mean = float(np.mean([K0[0, 0], K1[1, 1]]))
        return _pose_opencv(normalize_with_intrinsics(pts0, K0), normalize_with_intrinsics(pts1, K1),
                            threshold / f_mean, conf, max_iters, seed, usac=estimator == "magsac")
    options = _ransac_options(estimator, "max_epipolar_error", threshold, conf, max_iters, seed)
    if estimator == "poselib":
        return _pose_poselib(pts0, pts1, K0, K1, options)
    return _pose_colmap(pts0, pts1, K0, K1, options)


# --------------------------------------------------------------------------------------------------------------------
# Homography and fundamental matrix
# --------------------------------------------------------------------------------------------------------------------


def _finish(model: Any, mask: Any, n: int) -> Optional[Estimate]:
    if model is None or mask is None:
        return None
    model = np.asarray(model, dtype=np.float64)
    inliers = _mask(mask, n)
    if model.shape[0] < 3 or model.size < 9 or not np.isfinite(model).all() or inliers is None:
        return None
    return Estimate(model[:3, :3].copy(), inliers)


def _estimate_matrix(kind: str, kpts0: np.ndarray, kpts1: np.ndarray, estimator: str, threshold: float,
                     confidence: Optional[float], max_iters: Optional[int], seed: Optional[int]) -> Optional[Estimate]:
    estimator = check_estimator(estimator)
    pts0, pts1 = _points(kpts0), _points(kpts1)
    if not _valid(pts0, pts1, 4 if kind == "homography" else 8):
        return None
    conf = DEFAULT_CONFIDENCE[estimator] if confidence is None else float(confidence)
    homography = kind == "homography"
    try:
        if estimator == "opencv":
            iters = 2000 if max_iters is None else int(max_iters)
            if homography:
                model, mask = cv2.findHomography(pts0, pts1, cv2.RANSAC, float(threshold), maxIters=iters,
                                                 confidence=conf)
            else:
                model, mask = cv2.findFundamentalMat(pts0, pts1, cv2.FM_RANSAC, float(threshold), conf, iters)
            return _finish(model, mask, len(pts0))
        if estimator == "magsac":
            params = usac_params(kind, threshold, conf, max_iters, seed)
            model, mask = (cv2.findHomography if homography else cv2.findFundamentalMat)(pts0, pts1, params)
            return _finish(model, mask, len(pts0))
    except cv2.error:
        return None
    key = "max_reproj_error" if homography else "max_epipolar_error"
    options = _ransac_options(estimator, key, threshold, conf, max_iters, seed)
    if estimator == "poselib":
        poselib = _backend("poselib")
        try:
            model, info = (poselib.estimate_homography if homography else poselib.estimate_fundamental)(
                pts0, pts1, options, {})
        except (RuntimeError, ValueError):
            return None
        return _finish(model, info.get("inliers"), len(pts0))
    pycolmap = _backend("colmap")
    result = (pycolmap.estimate_homography_matrix if homography else pycolmap.estimate_fundamental_matrix)(
        pts0, pts1, options)
    if not result:
        return None
    return _finish(result["H" if homography else "F"], result["inlier_mask"], len(pts0))


def estimate_homography(kpts0: np.ndarray, kpts1: np.ndarray, estimator: str = "opencv", threshold: float = 3.0,
                        confidence: Optional[float] = None, max_iters: Optional[int] = None,
                        seed: Optional[int] = 0) -> Optional[Estimate]:
    """Robust homography ``x1 ~ H x0`` from ``(M, 2)`` matched pixels; threshold: reprojection error in pixels.

    ``opencv`` is ``cv2.findHomography(RANSAC)`` (``max_iters`` default 2000, OpenCV's), ``magsac`` USAC MAGSAC++,
    ``poselib`` LO-RANSAC with refinement, ``colmap`` LO-RANSAC. Other arguments as
    :func:`estimate_relative_pose`. Returns an :class:`Estimate` or ``None`` (fewer than 4 matches, failure).
    """
    return _estimate_matrix("homography", kpts0, kpts1, estimator, threshold, confidence, max_iters, seed)


def estimate_fundamental(kpts0: np.ndarray, kpts1: np.ndarray, estimator: str = "opencv", threshold: float = 3.0,
                         confidence: Optional[float] = None, max_iters: Optional[int] = None,
                         seed: Optional[int] = 0) -> Optional[Estimate]:
    """Robust fundamental matrix ``x1^T F x0 = 0`` from ``(M, 2)`` matched pixels; threshold in pixels.

    Returns an :class:`Estimate` or ``None`` (fewer than 8 matches, failure). Arguments as
    :func:`estimate_homography`.
    """
    return _estimate_matrix("fundamental", kpts0, kpts1, estimator, threshold, confidence, max_iters, seed)
