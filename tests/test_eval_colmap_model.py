"""Pose evaluation against a COLMAP model: a synthetic scene written as a COLMAP text model, known poses, known
errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightmatch.cli import main
from lightmatch.errors import ConfigError, InputError
from lightmatch.eval.colmap_model import pairs_from_colmap_model
from lightmatch.eval.pose import evaluate_pose
from lightmatch.eval.pose_data import read_pose_pairs
from lightmatch.io import h5
from lightmatch.types import Features, Matches

pytest.importorskip("pycolmap")

W, H = 640, 480
K = np.array([[500.0, 0.0, 320.0], [0.0, 505.0, 240.0], [0.0, 0.0, 1.0]])  # COLMAP convention (pixel centre 0.5)
K_OURS = K - np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])  # lightmatch convention (pixel centre 0)


def _rt(rvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))[0]
    T[:3, 3] = t
    return T


# cam_from_world of five cameras: three on an arc see the main cluster of points, two far to the side see a side
# cluster the others do not (so pairs across the groups have a low covisibility)
POSES = [_rt([0, 0, 0], [0, 0, 0]), _rt([0.02, -0.15, 0.01], [0.8, 0.05, 0.1]),
         _rt([-0.03, -0.3, 0.02], [1.6, -0.05, 0.3]), _rt([0.0, 0.0, 0.0], [7.0, 0.0, 0.0]),
         _rt([0.0, 0.05, 0.0], [6.6, 0.0, 0.2])]


def _quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> (qw, qx, qy, qz)."""
    w = np.sqrt(max(0.0, 1 + np.trace(R))) / 2
    return np.array([w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)])


def _text(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def _project(T: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP pixels of X in camera T, and which are in front and inside the image."""
    Xc = X @ T[:3, :3].T + T[:3, 3]
    x = Xc @ K.T
    p = x[:, :2] / x[:, 2:]
    return p, (Xc[:, 2] > 0) & (p[:, 0] > 0) & (p[:, 0] < W) & (p[:, 1] > 0) & (p[:, 1] < H)


def write_scene(folder, model_poses=POSES, n=300, seed=0):
    """Write the COLMAP text model of the scene (poses ``model_poses``) and return the 3D points and visibility."""
    rng = np.random.default_rng(seed)
    X = np.r_[rng.uniform([-2, -1.5, 5], [2, 1.5, 9], (n, 3)),
              rng.uniform([-8.5, -1.5, 5], [-5.5, 1.5, 7], (n // 3, 3))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    visible, observations = [], {j: [] for j in range(len(X))}
    lines = []
    for i, (T_true, T_model) in enumerate(zip(POSES, model_poses)):
        p, ok = _project(T_true, X)
        visible.append(ok)
        q, t = _quaternion(T_model[:3, :3]), T_model[:3, 3]
        lines.append(f"{i + 1} {_text(q)} {_text(t)} 1 im{i}.jpg")
        points = []
        for j in np.flatnonzero(ok):
            observations[j].append((i + 1, len(points)))
            points.append(f"{_text(p[j])} {j + 1}")
        lines.append(" ".join(points))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "points3D.txt").write_text("".join(
        f"{j + 1} {_text(X[j])} 128 128 128 0.1 "
        + " ".join(f"{im} {idx}" for im, idx in obs) + "\n" for j, obs in observations.items() if len(obs) >= 2))
    return X, visible


def write_stores(folder, X, visible, noise=0.0):
    """features.h5 / matches.h5 of the true projections (lightmatch convention) and all covisible pairs."""
    rng = np.random.default_rng(1)
    feats, index = {}, []
    for i, T in enumerate(POSES):
        p, _ = _project(T, X)
        kp = p[visible[i]] - 0.5 + rng.normal(0, noise, (int(visible[i].sum()), 2))
        feats[f"im{i}.jpg"] = Features.from_numpy(kp.astype(np.float32), np.ones(len(kp)), np.zeros((len(kp), 4)),
                                                  (W, H))
        index.append(np.cumsum(visible[i]) - 1)
    matches = {}
    for a in range(len(POSES)):
        for b in range(a + 1, len(POSES)):
            both = visible[a] & visible[b]
            m0 = -np.ones(int(visible[a].sum()), dtype=np.int64)
            m0[index[a][both]] = index[b][both]
            matches[(f"im{a}.jpg", f"im{b}.jpg")] = Matches(torch.from_numpy(m0), torch.ones(len(m0)))
    h5.write_features(folder / "features.h5", feats)
    h5.write_matches(folder / "matches.h5", matches)


def test_pairs_from_model_have_the_known_geometry(tmp_path):
    X, visible = write_scene(tmp_path / "model")
    found = pairs_from_colmap_model(tmp_path / "model", num_pairs=10, min_covisibility=0.3)
    names = {(p.name0, p.name1) for p in found.pairs}
    assert names == {("im0.jpg", "im1.jpg"), ("im0.jpg", "im2.jpg"), ("im1.jpg", "im2.jpg"), ("im3.jpg", "im4.jpg")}
    assert found.num_candidates == 4 and found.distorted_cameras == []
    assert len(pairs_from_colmap_model(tmp_path / "model", min_covisibility=0.01).pairs) == 10
    assert np.all(found.covisibility >= 0.3) and np.all(found.covisibility <= 1)
    for pair in found.pairs:
        a, b = int(pair.name0[2]), int(pair.name1[2])
        np.testing.assert_allclose(pair.T_0to1, POSES[b] @ np.linalg.inv(POSES[a]), atol=1e-9)
        np.testing.assert_allclose(pair.K0, K_OURS)
        shared = np.sum(visible[a] & visible[b]) / min(visible[a].sum(), visible[b].sum())
        assert found.covisibility[found.pairs.index(pair)] == pytest.approx(shared)
    # sampling is seeded and bounded by num_pairs
    two = pairs_from_colmap_model(tmp_path / "model", num_pairs=2, min_covisibility=0.3, seed=4)
    again = pairs_from_colmap_model(tmp_path / "model", num_pairs=2, min_covisibility=0.3, seed=4)
    assert [(p.name0, p.name1) for p in two.pairs] == [(p.name0, p.name1) for p in again.pairs]
    assert len(two.pairs) == 2
    # given pairs
    (tmp_path / "pairs.txt").write_text("im2.jpg im0.jpg\n")
    given = pairs_from_colmap_model(tmp_path / "model", tmp_path / "pairs.txt")
    np.testing.assert_allclose(given.pairs[0].T_0to1, POSES[0] @ np.linalg.inv(POSES[2]), atol=1e-9)


def test_model_errors(tmp_path):
    write_scene(tmp_path / "model")
    (tmp_path / "pairs.txt").write_text("im0.jpg nope.jpg\n")
    with pytest.raises(InputError, match="nope.jpg"):
        pairs_from_colmap_model(tmp_path / "model", tmp_path / "pairs.txt")
    with pytest.raises(InputError, match="covisibility"):
        pairs_from_colmap_model(tmp_path / "model", min_covisibility=0.5, max_covisibility=0.6)
    with pytest.raises(ConfigError, match="covisibility"):
        pairs_from_colmap_model(tmp_path / "model", min_covisibility=0.5, max_covisibility=0.2)
    with pytest.raises(InputError, match="not a folder"):
        pairs_from_colmap_model(tmp_path / "missing")


@pytest.mark.parametrize("estimator", ["opencv", "poselib"])
def test_known_pose_errors(tmp_path, estimator):
    """Exact matches against the true model give ~0 error; a model whose camera 2 is turned by 3 degrees about its
    own centre gives 3 degrees on the pairs with camera 2, and 0 on the other."""
    X, visible = write_scene(tmp_path / "true")
    write_stores(tmp_path, X, visible)
    (tmp_path / "images").mkdir()
    stores = {"features_h5": tmp_path / "features.h5", "matches_h5": tmp_path / "matches.h5"}
    pairs = pairs_from_colmap_model(tmp_path / "true", min_covisibility=0.3).pairs
    report = evaluate_pose(pairs, tmp_path / "images", resize=[-1], estimator=estimator, **stores)
    assert all(r["pose_error"] < 0.01 for r in report.pairs)
    assert report.summary["auc@5"] > 99.8 and report.summary["precision"] == 100.0

    turned = list(POSES)
    turned[2] = _rt([0, np.deg2rad(3.0), 0], [0, 0, 0]) @ POSES[2]  # same centre, turned by 3 degrees
    write_scene(tmp_path / "turned", model_poses=turned)
    pairs = pairs_from_colmap_model(tmp_path / "turned", min_covisibility=0.3).pairs
    report = evaluate_pose(pairs, tmp_path / "images", resize=[-1], estimator=estimator, **stores)
    errors = {(r["image0"], r["image1"]): r for r in report.pairs}
    assert errors[("im0.jpg", "im1.jpg")]["pose_error"] < 0.01
    for key in (("im0.jpg", "im2.jpg"), ("im1.jpg", "im2.jpg")):
        assert errors[key]["error_R"] == pytest.approx(3.0, abs=0.01)
        assert errors[key]["pose_error"] == pytest.approx(3.0, abs=0.01)


def test_cli_colmap_model(tmp_path):
    X, visible = write_scene(tmp_path / "model")
    write_stores(tmp_path, X, visible)
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(main, ["eval", "pose", "--colmap-model", str(tmp_path / "model"),
                                       str(tmp_path / "images"), "--num-pairs", "2", "--min-covisibility", "0.3",
                                       "--resize", "-1", "--features-h5", str(tmp_path / "features.h5"),
                                       "--matches-h5", str(tmp_path / "matches.h5"), "-o", str(tmp_path / "out"),
                                       "--estimator", "poselib", "--ransac-threshold", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["num_pairs"] == 2 and payload["auc@5"] > 99.8
    assert payload["settings"]["estimator"] == "poselib" and payload["settings"]["num_candidate_pairs"] == 4
    assert len(read_pose_pairs(tmp_path / "out" / "pairs_with_gt.txt")) == 2
    text = CliRunner().invoke(main, ["eval", "pose", str(tmp_path / "out" / "pairs_with_gt.txt"),
                                     str(tmp_path / "images"), "--resize", "-1",
                                     "--features-h5", str(tmp_path / "features.h5"),
                                     "--matches-h5", str(tmp_path / "matches.h5")])
    assert text.exit_code == 0, text.output
    assert text.output.startswith("Estimator: opencv, threshold 1 px, seed 0\nEvaluation Results (mean over 2 pairs)")
    usage = CliRunner().invoke(main, ["eval", "pose", str(tmp_path / "images"), "--num-pairs", "3"])
    assert usage.exit_code == 2 and "--num-pairs needs --colmap-model" in usage.output
