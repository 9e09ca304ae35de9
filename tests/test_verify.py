"""Geometric verification (MAGSAC++ via OpenCV USAC) on synthetic correspondences with known geometry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lightmatch.errors import ConfigError
from lightmatch.pipeline.verify import default_intrinsics, verify_matches, verify_pair
from lightmatch.types import Features, Matches

H_TRUE = np.array([[1.05, 0.08, 25.0], [-0.04, 0.97, 12.0], [2e-4, -1e-4, 1.0]])


def homography_data(seed=0, n=400, outlier_ratio=0.3, noise=0.5):
    """Keypoints of two images related by H_TRUE, matched in shuffled order; 30% of the matches are wrong."""
    rng = np.random.default_rng(seed)
    kp0 = rng.uniform(0, 640, (n, 2))
    proj = np.c_[kp0, np.ones(n)] @ H_TRUE.T
    kp1 = proj[:, :2] / proj[:, 2:] + rng.normal(0, noise, (n, 2))
    outlier = rng.random(n) < outlier_ratio
    kp1[outlier] = rng.uniform(0, 640, (outlier.sum(), 2))
    perm = rng.permutation(n)  # keypoints of image 1 in another order
    kp1_shuffled = np.empty_like(kp1)
    kp1_shuffled[perm] = kp1
    matches = np.stack([np.arange(n), perm], -1)
    return kp0.astype(np.float32), kp1_shuffled.astype(np.float32), matches, ~outlier


def two_view_data(seed=0, n=400, outlier_ratio=0.3, noise=0.5):
    """A random 3D scene seen by two cameras with different intrinsics; 30% of the matches are wrong."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), rng.uniform(4, 9, n)]
    K0 = np.array([[520.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    K1 = np.array([[610.0, 0, 330.0], [0, 610.0, 250.0], [0, 0, 1]])
    R = cv2.Rodrigues(np.array([0.04, -0.25, 0.03]))[0]
    t = np.array([1.0, 0.1, 0.2])

    def project(K, P):
        p = P @ K.T
        return p[:, :2] / p[:, 2:]

    kp0 = project(K0, X) + rng.normal(0, noise, (n, 2))
    kp1 = project(K1, X @ R.T + t) + rng.normal(0, noise, (n, 2))
    outlier = rng.random(n) < outlier_ratio
    kp1[outlier] = rng.uniform(0, 640, (outlier.sum(), 2))
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ R
    F = np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)
    matches = np.stack([np.arange(n), np.arange(n)], -1)
    return kp0, kp1, matches, ~outlier, K0, K1, E, F


def precision_recall(found, truth):
    return (found & truth).sum() / max(found.sum(), 1), (found & truth).sum() / truth.sum()


def test_homography_inliers_and_model():
    kp0, kp1, matches, truth = homography_data()
    result = verify_matches(kp0, kp1, matches, model="homography", threshold=3.0, seed=0)
    assert result.inliers.dtype == bool and result.inliers.shape == (len(matches),)
    precision, recall = precision_recall(result.inliers, truth)
    assert precision > 0.97 and recall > 0.95
    corners = np.array([[0, 0, 1], [640, 0, 1], [640, 640, 1], [0, 640, 1]], dtype=float)
    est = corners @ result.model.T
    ref = corners @ H_TRUE.T
    error = np.linalg.norm(est[:, :2] / est[:, 2:] - ref[:, :2] / ref[:, 2:], axis=1)
    assert error.max() < 2.0


def test_repeatable_for_a_seed_and_equal_to_the_opencv_flag():
    kp0, kp1, matches, _ = homography_data(seed=1, outlier_ratio=0.6)
    first = verify_matches(kp0, kp1, matches, seed=7)
    again = verify_matches(kp0, kp1, matches, seed=7)
    assert np.array_equal(first.inliers, again.inliers) and np.array_equal(first.model, again.model)
    # seed 0 reproduces cv2.USAC_MAGSAC exactly (its USAC random state is always 0)
    ours = verify_matches(kp0, kp1, matches, seed=0, threshold=3.0, confidence=0.9999, max_iters=10000)
    H, mask = cv2.findHomography(kp0[matches[:, 0]].astype(np.float64), kp1[matches[:, 1]].astype(np.float64),
                                 cv2.USAC_MAGSAC, 3.0, maxIters=10000, confidence=0.9999)
    assert np.array_equal(ours.inliers, mask.ravel().astype(bool))
    np.testing.assert_allclose(ours.model, H, rtol=1e-6, atol=1e-9)


def test_seed_changes_the_sampling():
    kp0, kp1, matches, truth, *_ = two_view_data(seed=3, outlier_ratio=0.5)
    results = [verify_matches(kp0, kp1, matches, model="fundamental", seed=s) for s in range(4)]
    assert len({r.model.tobytes() for r in results}) > 1  # different seeds sample differently...
    for result in results:  # ...and all find the scene
        assert precision_recall(result.inliers, truth)[0] > 0.95


def test_fundamental_two_view_scene():
    kp0, kp1, matches, truth, K0, K1, E, F_true = two_view_data()
    result = verify_matches(torch.from_numpy(kp0), torch.from_numpy(kp1), torch.from_numpy(matches),
                            model="fundamental", threshold=2.0, seed=0)
    precision, recall = precision_recall(result.inliers, truth)
    assert precision > 0.97 and recall > 0.9
    F = result.model / np.linalg.norm(result.model)
    F_ref = F_true / np.linalg.norm(F_true)
    assert min(np.abs(F - F_ref).max(), np.abs(F + F_ref).max()) < 0.05
    assert np.linalg.matrix_rank(result.model, tol=1e-8 * np.abs(result.model).max()) == 2


def test_essential_with_intrinsics():
    kp0, kp1, matches, truth, K0, K1, E_true, _ = two_view_data(seed=1)
    result = verify_matches(kp0, kp1, matches, model="essential", K0=K0, K1=K1, threshold=1.5, seed=0)
    precision, recall = precision_recall(result.inliers, truth)
    assert precision > 0.97 and recall > 0.9
    E = result.model / np.linalg.norm(result.model)
    E_ref = E_true / np.linalg.norm(E_true)
    assert min(np.abs(E - E_ref).max(), np.abs(E + E_ref).max()) < 0.05


def test_essential_from_image_size():
    K = default_intrinsics((640, 480))
    np.testing.assert_allclose(K, [[768, 0, 319.5], [0, 768, 239.5], [0, 0, 1]])
    kp0, kp1, matches, truth, *_ = two_view_data(seed=2)
    # the guessed focal (768) is off from the true ones (520, 610): still finds most inliers with a looser threshold
    result = verify_matches(kp0, kp1, matches, model="essential", size0=(640, 480), size1=(640, 480), threshold=3.0)
    assert result.model is not None and precision_recall(result.inliers, truth)[0] > 0.9
    with pytest.raises(ConfigError, match="K0"):
        verify_matches(kp0, kp1, matches, model="essential")


@pytest.mark.parametrize("model,minimum", [("homography", 4), ("fundamental", 8), ("essential", 5)])
def test_too_few_matches(model, minimum):
    kp0, kp1, matches, *_ = two_view_data()
    few = matches[: minimum - 1]
    result = verify_matches(kp0, kp1, few, model=model, size0=(640, 480), size1=(640, 480))
    assert result.model is None and result.inliers.shape == (minimum - 1,) and not result.inliers.any()
    empty = verify_matches(kp0, kp1, np.zeros((0, 2), dtype=np.int64), model=model, size0=(640, 480),
                           size1=(640, 480))
    assert empty.inliers.shape == (0,) and empty.model is None
    enough = verify_matches(kp0, kp1, matches[: max(minimum, 12)], model=model, size0=(640, 480),
                            size1=(640, 480))
    assert enough.inliers.shape == (max(minimum, 12),)


@pytest.mark.parametrize("model", ["homography", "fundamental", "essential"])
def test_degenerate_input_does_not_raise(model):
    kp0 = np.tile([[100.0, 100.0]], (20, 1))
    kp1 = np.tile([[50.0, 80.0]], (20, 1))
    matches = np.stack([np.arange(20), np.arange(20)], -1)
    result = verify_matches(kp0, kp1, matches, model=model, size0=(640, 480), size1=(640, 480))
    assert result.inliers.shape == (20,)
    kp0[3] = np.nan
    result = verify_matches(kp0, kp1, matches, model=model, size0=(640, 480), size1=(640, 480))
    assert result.model is None and not result.inliers.any()


def test_bad_arguments():
    kp0, kp1, matches, _ = homography_data()
    with pytest.raises(ConfigError, match="affine"):
        verify_matches(kp0, kp1, matches, model="affine")
    with pytest.raises(ValueError, match="out of range"):
        verify_matches(kp0, kp1, matches + len(kp1))


def test_verify_pair_aligns_with_matches0():
    kp0, kp1, matches, truth = homography_data(n=200)
    n0 = len(kp0) + 50  # extra unmatched keypoints in image 0
    kp0 = np.r_[kp0, np.zeros((50, 2), np.float32)]
    matches0 = -np.ones(n0, dtype=np.int64)
    matches0[matches[:, 0]] = matches[:, 1]

    def feats(kp):
        return Features.from_numpy(kp, np.ones(len(kp)), np.zeros((len(kp), 4)), (640, 640))

    m = Matches(torch.from_numpy(matches0), torch.ones(n0))
    inliers0 = verify_pair(feats(kp0), feats(kp1), m, model="homography", seed=0)
    assert inliers0.shape == (n0,) and inliers0.dtype == bool
    assert not inliers0[len(matches):].any()
    direct = verify_matches(kp0, kp1, m.pairs(), seed=0).inliers
    assert np.array_equal(inliers0[m.pairs()[:, 0]], direct)
    assert verify_pair(feats(kp0), feats(kp1), m, model="essential").shape == (n0,)
