"""Every extractor/matcher combination through `lightmatch match`, including SuperPoint/SuperGlue from
checkpoints built here in the official layout (the real files are not redistributable)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, assert_store_invariant, invoke, superglue_checkpoint, superpoint_checkpoint

from lightmatch.io import h5

SMALL = ["--resize", "480", "--max-keypoints", "512", "--json"]
TINY = ["--resize", "320", "--max-keypoints", "256", "--json"]  # random SuperPoint weights: only the path matters


@pytest.mark.parametrize("features", ["sift", "aliked", "disk"])
def test_nearest_neighbour_on_bench_pair(shared_data, features):
    root = shared_data / "lightglue_bench"
    out = json.loads(invoke("match", root / "DSC_0411.JPG", root / "DSC_0410.JPG", "--features", features,
                         "--matcher", "nn", "--ratio-threshold", "0.9", *SMALL).stdout)
    assert out["keypoints0"] > 100 and out["matches"] > 30


@pytest.mark.parametrize("features, matcher", [("disk", "lightglue"), ("xfeat", "lightglue"),
                                               ("aliked-n32", "lightglue"), ("aliked-t16", "nn")])
def test_other_extractors_on_sample(sample_pair, features, matcher):
    out = json.loads(invoke("match", sample_pair[0], sample_pair[1], "--features", features, "--matcher", matcher,
                         "--homography", sample_pair[2], *SMALL).stdout)
    assert out["matches"] > 100 and out["correct"] > 0.85 * out["matches"]


def test_superpoint_without_weights_says_how_to_get_them(sample_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path))
    proc = invoke("match", sample_pair[0], sample_pair[1], "--features", "superpoint", check_code=None)
    assert_one_line_error(proc, "superpoint_v1.pth", "lightmatch weights download superpoint", "--weights")


def test_superpoint_superglue_path_runs_with_official_layout(sample_pair, tmp_path):
    sp, sg = tmp_path / "superpoint_v1.pth", tmp_path / "superglue_outdoor.pth"
    torch.save(superpoint_checkpoint(), sp)
    torch.save(superglue_checkpoint(), sg)
    out = json.loads(invoke("match", sample_pair[0], sample_pair[1], "--features", "superpoint", "--weights", sp,
                         "--matcher", "superglue", "--matcher-weights", sg, "--sinkhorn-iterations", "20",
                         "-o", tmp_path / "out", *TINY).stdout)
    # random official-layout weights: what matters is that the whole path ran and stored a consistent result
    assert out["keypoints0"] > 0 and out["stop_layer"] == 18  # all 18 GNN layers ran
    assert_store_invariant(tmp_path / "out")
    with h5py.File(tmp_path / "out" / "matches.h5") as handle:
        assert handle.attrs["lightmatch_matcher"] == "superglue"
        m0 = handle["sample0.jpg/sample1.jpg/matches0"][()]
        scores = handle["sample0.jpg/sample1.jpg/matching_scores0"][()]
    assert len(m0) == out["keypoints0"] and int((m0 > -1).sum()) == out["matches"]
    assert ((scores >= 0) & (scores <= 1)).all() and (scores[m0 == -1] == 0).all()


def test_superpoint_lightglue_path_runs_with_official_layout(sample_pair, tmp_path):
    """The files given reach the models: the stores hold what the library computes with SuperPoint and LightGlue
    built from them, and record the matcher's weights by their digest."""
    from lightmatch import weights
    from lightmatch.io.images import load_image
    from lightmatch.models.factory import load_extractor, load_matcher

    sp, lg = tmp_path / "superpoint_v1.pth", tmp_path / "superpoint_lightglue.pth"
    torch.save(superpoint_checkpoint(), sp)
    # superpoint_lightglue has ALIKED's LightGlue layout without the input projection (256-d in, 256-d tokens)
    state = {k: v for k, v in weights.load_state_dict("aliked_lightglue").items() if not k.startswith("input_proj")}
    torch.save(state, lg)
    out = json.loads(invoke("match", sample_pair[0], sample_pair[1], "--features", "superpoint", "--weights", sp,
                            "--matcher-weights", lg, "-o", tmp_path / "out", *TINY).stdout)
    extractor = load_extractor("superpoint", max_keypoints=256, resize=320, device="cpu", weights=str(sp))
    matcher = load_matcher("lightglue", features="superpoint", device="cpu", weights=str(lg))
    feats0, feats1 = (extractor.extract(load_image(path)) for path in sample_pair[:2])
    expected = matcher.match(feats0, feats1)
    stored = h5.read_features(tmp_path / "out" / "features.h5", "sample0.jpg")
    assert out["keypoints0"] == len(feats0) == len(stored) and 0 < len(stored) <= 256
    assert stored.descriptors.shape[1] == 256 and torch.equal(stored.keypoints, feats0.keypoints)
    assert out["matches"] == expected.num_matches and out["stop_layer"] == expected.stop_layer
    with h5py.File(tmp_path / "out" / "matches.h5") as handle:
        assert handle.attrs["lightmatch_matcher_weights"] == matcher.weights_id
        assert matcher.weights_id.startswith("sha256:")
        assert np.array_equal(handle["sample0.jpg/sample1.jpg/matches0"][()], expected.matches0.numpy())
    assert_store_invariant(tmp_path / "out")


@pytest.mark.parametrize("features, matcher, message", [
    ("disk", "superglue", "SuperGlue is trained for SuperPoint features only"),
    ("aliked-t16", "lightglue", "no LightGlue weights for features 'aliked-t16'")])
def test_pair_without_weights_is_a_usage_error(sample_pair, features, matcher, message):
    proc = invoke("match", sample_pair[0], sample_pair[1], "--features", features, "--matcher", matcher,
               check_code=None)
    assert_one_line_error(proc, message)
    assert proc.returncode == 2
