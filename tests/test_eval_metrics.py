"""Tests of lightmatch.eval.metrics: AUC, epipolar distances, pose estimation, homography metrics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lightmatch.eval import metrics as M

# ---------------------------------------------------------------------------------------------------------------------
# helpers: a synthetic two-view scene
# ---------------------------------------------------------------------------------------------------------------------


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.array([rx, ry, rz], dtype=np.float64))
    return R


def make_scene(n: int = 200, seed: int = 0):
    """Points in front of two cameras with different intrinsics; returns pixels, K0, K1, T_0to1, 3D points."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[520.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
    K1 = np.array([[610.0, 0.0, 300.0], [0.0, 600.0, 250.0], [0.0, 0.0, 1.0]])
    R = rotation(0.05, -0.12, 0.03)
    t = np.array([0.8, 0.1, -0.15])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    X0 = rng.uniform([-2.0, -1.5, 4.0], [2.0, 1.5, 9.0], size=(n, 3))
    X1 = X0 @ R.T + t
    assert np.all(X1[:, 2] > 0)
    p0 = (X0 @ K0.T)[:, :2] / X0[:, 2:]
    p1 = (X1 @ K1.T)[:, :2] / X1[:, 2:]
    return p0, p1, K0, K1, T, X0


# ---------------------------------------------------------------------------------------------------------------------
# pose_auc
# ---------------------------------------------------------------------------------------------------------------------


def test_pose_auc_superglue_example():
    # sorted errors 0,1,2,3 with recall 0,.2,.4,.4 (held): area .1 + .3 + .4 = .8, / 3
    assert M.pose_auc([1, 2, 3, 4, 5], [3]) == pytest.approx([0.8 / 3])


def test_pose_auc_hand_computed_three_thresholds():
    # errors 2, 6, 12: recall steps 1/3, 2/3, 1
    # t=5: [0,2]: 1/3; [2,5]: 3 * 1/3 = 1            -> (4/3) / 5
    # t=10: 1/3 + 4 * 1/2 + 4 * 2/3 = 5             -> 5 / 10
    # t=20: 1/3 + 2 + 6 * 5/6 + 8 * 1 = 15 + 1/3     -> / 20
    aucs = M.pose_auc(np.array([12.0, 2.0, 6.0]), [5, 10, 20])
    assert aucs == pytest.approx([(4 / 3) / 5, 0.5, (15 + 1 / 3) / 20])


def test_pose_auc_extremes_and_failures():
    assert M.pose_auc([0.0, 0.0], [1, 5]) == pytest.approx([1.0, 1.0])
    assert M.pose_auc([30.0, math.inf], [5, 10, 20]) == pytest.approx([0.0, 0.0, 0.0])
    # 0.5 and a failure, threshold 1: area .5 * .5 / 2 + .5 * .5 = .375
    assert M.pose_auc([math.inf, 0.5], [1]) == pytest.approx([0.375])
    assert all(math.isnan(a) for a in M.pose_auc([], [5, 10]))


# ---------------------------------------------------------------------------------------------------------------------
# epipolar geometry
# ---------------------------------------------------------------------------------------------------------------------


def test_essential_from_pose_and_skew():
    T = np.eye(4)
    T[:3, :3] = rotation(0.1, 0.2, -0.3)
    T[:3, 3] = [0.3, -0.2, 1.0]
    v = np.array([1.0, 2.0, 3.0])
    assert np.allclose(M.skew(T[:3, 3]) @ v, np.cross(T[:3, 3], v))
    assert np.allclose(M.essential_from_pose(T), M.skew(T[:3, 3]) @ T[:3, :3])


def test_symmetric_epipolar_distance_pure_x_translation():
    # R = I, t = (1, 0, 0): epipolar lines are horizontal, x1^T E x0 = y0 - y1 and both line normals have unit
    # length, so the distance is 2 (y0 - y1)^2.
    T = np.eye(4)
    T[0, 3] = 1.0
    E = M.essential_from_pose(T)
    pts0 = np.array([[0.1, 0.2], [0.0, -0.3], [0.5, 0.5]])
    pts1 = np.array([[-0.4, 0.2], [0.2, -0.25], [0.1, 0.6]])
    expected = 2 * (pts0[:, 1] - pts1[:, 1]) ** 2
    assert np.allclose(M.symmetric_epipolar_distance(pts0, pts1, E), expected)


def _point_line_distance_via_rays(x_from: np.ndarray, x_to: np.ndarray, R: np.ndarray, t: np.ndarray) -> float:
    """Distance (normalised coords, image 'to') of x_to to the epipolar line of x_from, built by projecting two
    points of the back-projected ray of x_from. (R, t) maps the 'from' camera frame to the 'to' camera frame."""
    ray = np.array([x_from[0], x_from[1], 1.0])
    a = R @ (1.0 * ray) + t
    b = R @ (10.0 * ray) + t
    pa, pb = a[:2] / a[2], b[:2] / b[2]
    d = pb - pa
    w = x_to - pa
    return abs(d[0] * w[1] - d[1] * w[0]) / np.linalg.norm(d)


def test_epipolar_error_synthetic_scene_exact_and_perturbed():
    p0, p1, K0, K1, T, _ = make_scene()
    err = M.compute_epipolar_error(p0, p1, T, K0, K1)
    assert err.shape == (len(p0),)
    assert np.max(err) < 1e-20

    # move one point of image 1 by (3, -2) pixels; expected distance from the ray geometry, independent of E
    i = 17
    q1 = p1.copy()
    q1[i] += [3.0, -2.0]
    err = M.compute_epipolar_error(p0, q1, T, K0, K1)
    x0 = M.normalize_with_intrinsics(p0[i : i + 1], K0)[0]
    x1 = M.normalize_with_intrinsics(q1[i : i + 1], K1)[0]
    R, t = T[:3, :3], T[:3, 3]
    d1 = _point_line_distance_via_rays(x0, x1, R, t)  # in image 1
    d0 = _point_line_distance_via_rays(x1, x0, R.T, -R.T @ t)  # in image 0
    assert err[i] == pytest.approx(d0**2 + d1**2, rel=1e-9)
    assert d1 > 1e-3  # a real perturbation
    others = np.delete(err, i)
    assert np.max(others) < 1e-20


# ---------------------------------------------------------------------------------------------------------------------
# angle errors and pose estimation
# ---------------------------------------------------------------------------------------------------------------------


def test_angle_errors():
    assert M.angle_error_mat(np.eye(3), rotation(0, 0, math.radians(30))) == pytest.approx(30.0)
    assert M.angle_error_vec([1, 0, 0], [0, 2, 0]) == pytest.approx(90.0)
    T = np.eye(4)
    T[:3, :3] = rotation(0, math.radians(10), 0)
    T[:3, 3] = [1.0, 0.0, 0.0]
    # the opposite translation direction counts as correct (min(err, 180 - err))
    err_t, err_R = M.compute_pose_error(T, np.eye(3), np.array([-2.0, 0.0, 0.0]))
    assert err_t == pytest.approx(0.0, abs=1e-6)
    assert err_R == pytest.approx(10.0)
    err_t, _ = M.compute_pose_error(T, T[:3, :3], np.array([1.0, 1.0, 0.0]))
    assert err_t == pytest.approx(45.0)


def test_evaluate_pose_pair_and_summary():
    p0, p1, K0, K1, T, _ = make_scene(n=100, seed=3)
    kpts0 = np.concatenate([p0, [[5.0, 5.0], [600.0, 400.0]]])  # 102 keypoints, 2 unmatched
    kpts1 = p1[::-1].copy()  # reversed order: match i -> 99 - i
    m0 = np.full(len(kpts0), -1)
    m0[:100] = np.arange(100)[::-1]
    m0[:10] = (m0[:10] + 37) % 100  # 10 wrong matches (shifted to other points)
    res = M.evaluate_pose_pair(kpts0, kpts1, m0, K0, K1, T, seed=0)
    assert res.num_matches == 100 and res.num_keypoints0 == 102
    assert res.num_correct == 90
    assert res.precision == pytest.approx(0.9)
    assert res.matching_score == pytest.approx(90 / 102)
    assert res.pose_error < 1.0
    assert res.epipolar_errors.shape == (100,)

    fail = M.evaluate_pose_pair(kpts0, kpts1, np.full(len(kpts0), -1), K0, K1, T)
    assert math.isinf(fail.error_t) and fail.precision == 0.0 and fail.matching_score == 0.0

    summary = M.relative_pose_summary(
        [res, fail, {"error_t": 3.0, "error_R": 8.0, "precision": 0.5, "matching_score": 0.25}]
    )
    assert set(summary) == {"auc@5", "auc@10", "auc@20", "precision", "matching_score", "num_pairs"}
    expected = [100 * a for a in M.pose_auc([res.pose_error, math.inf, 8.0], [5, 10, 20])]
    assert [summary["auc@5"], summary["auc@10"], summary["auc@20"]] == pytest.approx(expected)
    assert summary["precision"] == pytest.approx(100 * (0.9 + 0 + 0.5) / 3)
    assert summary["matching_score"] == pytest.approx(100 * (90 / 102 + 0 + 0.25) / 3)
    assert summary["num_pairs"] == 3


# ---------------------------------------------------------------------------------------------------------------------
# homographies
# ---------------------------------------------------------------------------------------------------------------------


H_TEST = np.array([[0.9, 0.05, 12.0], [-0.04, 1.1, -7.0], [1e-4, -5e-5, 1.0]])


def test_homography_corner_error_known_cases():
    size = (640, 480)
    assert M.homography_corner_error(np.eye(3), np.eye(3), size) == 0.0
    Ht = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])
    assert M.homography_corner_error(Ht, np.eye(3), size) == pytest.approx(5.0)
    assert M.homography_corner_error(2 * Ht, Ht, size) == pytest.approx(0.0)  # scale invariant
    # scaling by 2 about the origin: corner errors 0, W, hypot(W, H), H
    W, H = size
    expected = (0 + W + math.hypot(W, H) + H) / 4
    assert M.homography_corner_error(np.diag([2.0, 2.0, 1.0]), np.eye(3), size) == pytest.approx(expected)
    assert M.homography_corner_error(None, np.eye(3), size) == math.inf


def test_symmetric_homography_error_and_gt_matches():
    rng = np.random.default_rng(0)
    k0 = rng.uniform(50, 400, (60, 2))
    k1 = M.warp_points(k0, H_TEST)
    assert np.max(M.symmetric_homography_error(k0, k1, H_TEST)) < 1e-9
    shifted = k1 + [6.0, 8.0]  # forward distance 10; backward distance is |H^-1 (x + d) - x0|
    err = M.symmetric_homography_error(k0, shifted, H_TEST)
    back = np.linalg.norm(M.warp_points(shifted, np.linalg.inv(H_TEST)) - k0, axis=-1)
    assert np.allclose(err, (10.0 + back) / 2)

    perm = rng.permutation(60)
    k1p = k1[perm]  # keypoint perm[j] of image 0 is at position j in image 1
    k1p[:5] += 50.0  # these five are no longer matchable
    gt = M.gt_matches_from_homography(k0, k1p, H_TEST)
    inv = np.argsort(perm)
    expected = inv.copy()
    expected[perm[:5]] = -1
    assert np.array_equal(gt, expected)


def test_homography_match_metrics_precision_recall():
    rng = np.random.default_rng(1)
    k0 = np.stack(np.meshgrid(np.arange(40, 400, 30.0), np.arange(40, 300, 30.0)), -1).reshape(-1, 2)
    n = len(k0)
    k1 = M.warp_points(k0, H_TEST)
    k1 = np.concatenate([k1, rng.uniform(0, 10, (5, 2)) + [1000, 1000]])  # 5 extra keypoints far away
    m0 = np.arange(n)
    m0[:10] = -1  # 10 unmatched
    m0[10:20] = (m0[10:20] + 3) % n  # 10 wrong (grid spacing 30 px, far beyond 3 px)
    out = M.homography_match_metrics(k0, k1, m0, H_TEST)
    assert out["num_matches"] == n - 10
    assert out["num_correct"] == n - 20
    assert out["precision"] == pytest.approx((n - 20) / (n - 10))
    assert out["num_matchable"] == n
    assert out["recall"] == pytest.approx((n - 20) / n)
    empty = M.homography_match_metrics(k0, k1, np.full(n, -1), H_TEST)
    assert empty["precision"] == 0.0 and empty["recall"] == 0.0


def test_homography_dlt_and_pair_evaluation():
    rng = np.random.default_rng(2)
    k0 = rng.uniform(0, 480, (200, 2))
    k1 = M.warp_points(k0, H_TEST)
    noisy = k1 + rng.normal(0, 0.2, k1.shape)
    noisy[:40] = rng.uniform(0, 480, (40, 2))  # 20% outliers
    H_dlt = M.estimate_homography_dlt(k0, k1)
    assert M.homography_corner_error(H_dlt, H_TEST, (480, 480)) < 1e-3  # OpenCV fits in float32
    assert M.estimate_homography_dlt(k0[:3], k1[:3]) is None

    m0 = np.arange(200)
    res = M.evaluate_homography_pair(k0, noisy, m0, H_TEST, (480, 480), ransac_thresh=1.0)
    assert res.error_ransac < 1.0
    assert res.error_dlt > res.error_ransac  # outliers pull the DLT fit
    assert res.precision == pytest.approx(160 / 200)
    assert res.num_inliers > 140
    summary = M.homography_summary([res, {"error_ransac": math.inf, "error_dlt": math.inf,
                                          "precision": 0.0, "recall": 0.0}])
    assert summary["num_pairs"] == 2
    assert summary["auc_ransac@1px"] == pytest.approx(100 * M.pose_auc([res.error_ransac, math.inf], [1])[0])
    assert summary["precision"] == pytest.approx(100 * 0.8 / 2)
    assert {"auc_dlt@1px", "auc_dlt@3px", "auc_dlt@5px", "recall", "median_precision"} <= set(summary)
