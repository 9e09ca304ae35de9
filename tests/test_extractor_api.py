"""The extractor interface (preprocess + run = extract, keypoint budget, precision) and the pieces of our ALIKED
forward pass, each against the operation it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import cached_aliked

from lightmatch.errors import ConfigError
from lightmatch.io.images import load_image
from lightmatch.models.aliked import bn_folded, deform_conv, upsampled_at, window_max


def nearest_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each ``(N, 2)`` point of ``a``, the distance to the nearest point of ``b`` (exact, no matmul trick)."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist").min(1).values


def test_preprocess_then_run_is_extract(sample_pair):
    from lightmatch.models.sift import SIFT

    image = load_image(sample_pair[0])
    for extractor in (cached_aliked(512, 0.2, 320), SIFT(resize=300, max_keypoints=500)):
        tensor, scale = extractor.preprocess(image)
        assert max(tensor.shape[-2:]) == extractor.resize and scale == (tensor.shape[-1] / 512,) * 2
        a, b = extractor.extract(image), extractor.run(tensor, scale, (512, 512))
        for key in ("keypoints", "scores", "descriptors", "scales", "oris"):
            assert (getattr(a, key) is None) == (getattr(b, key) is None)
            if getattr(a, key) is not None:
                assert torch.equal(getattr(a, key), getattr(b, key))
        assert a.image_size == b.image_size == (512, 512)


def test_sift_scales_and_orientations_come_with_the_features(sample_pair):
    from lightmatch.models.sift import SIFT

    image = load_image(sample_pair[0])  # 512 x 512
    sift = SIFT(resize=256, max_keypoints=300)
    half = sift.extract(image)
    small = SIFT(resize=None, max_keypoints=300).extract(sift.preprocess(image)[0])  # the same network image
    assert half.scales.shape == half.oris.shape == (len(half),) and len(half) == 300
    # in original pixels: twice the network image's scales, the same orientations
    torch.testing.assert_close(half.scales, small.scales * 2)
    torch.testing.assert_close(half.oris, small.oris)
    assert not hasattr(sift, "_last")  # no per-thread side channel


def test_keypoint_budget_restores_settings(sample_pair):
    from lightmatch.models.sift import SIFT

    aliked = cached_aliked(1000, 0.2, 256, "strict")
    budgeted, exact = aliked.with_keypoint_budget(123)
    assert exact and budgeted.max_keypoints == 123 and budgeted.detection_threshold == -1.0
    assert len(budgeted.extract(load_image(sample_pair[0]))) == 123
    assert aliked.max_keypoints == 1000 and aliked.detection_threshold == 0.2  # a new extractor, this one unchanged
    assert budgeted.net is aliked.net  # sharing the weights
    sift = SIFT(max_keypoints=50)
    budgeted, exact = sift.with_keypoint_budget(77)
    assert exact is False and budgeted.max_keypoints == 77 and sift.max_keypoints == 50


def test_unknown_precision_is_a_config_error():
    from lightmatch.models.sift import SIFT

    with pytest.raises(ConfigError, match="precision 'fp8'"):
        SIFT(precision="fp8")


@pytest.mark.parametrize("name", ["aliked", "disk"])
def test_bf16_keeps_most_keypoints_within_a_pixel(sample_pair, name):
    import lightmatch

    image = load_image(sample_pair[0])
    fp32 = lightmatch.load_extractor(name, max_keypoints=512, resize=384, device="cpu")
    bf16 = lightmatch.load_extractor(name, max_keypoints=512, resize=384, device="cpu", precision="bf16")
    a, b = fp32.extract(image), bf16.extract(image)
    assert b.keypoints.dtype == b.descriptors.dtype == b.scores.dtype == torch.float32
    assert abs(len(a) - len(b)) <= 0.05 * len(a)
    assert (nearest_distance(b.keypoints, a.keypoints) < 1.0).float().mean() > 0.85
    torch.testing.assert_close(b.descriptors.norm(dim=1), torch.ones(len(b)))


# ------------------------------------------------------------------------------------- ALIKED forward pieces ---

def test_window_max_is_max_pool():
    x = torch.rand(1, 1, 37, 53)
    x[0, 0, 3, 4:7] = 2.0  # ties
    for r in (1, 2, 4):
        assert torch.equal(window_max(x, r), F.max_pool2d(x, 2 * r + 1, stride=1, padding=r))


def test_upsampled_at_is_upsample_at_those_pixels():
    level = torch.randn(1, 5, 7, 9).contiguous(memory_format=torch.channels_last)
    dense = F.interpolate(level, size=(50, 70), mode="bilinear", align_corners=True)
    ys, xs = torch.randint(0, 50, (200,)), torch.randint(0, 70, (200,))
    ys[:2], xs[:2] = torch.tensor([0, 49]), torch.tensor([0, 69])  # the corners
    torch.testing.assert_close(upsampled_at(level, (50, 70), ys, xs), dense[0, :, ys, xs].T, atol=1e-6, rtol=1e-5)


def test_deform_conv_is_torchvision_deform_conv():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    from kornia.feature.aliked.aliked import DeformableConv2d

    torch.manual_seed(0)
    conv = DeformableConv2d(6, 8, kernel_size=3, padding=1)
    torch.nn.init.normal_(conv.offset_conv.weight, std=0.5)  # offsets of a few pixels, some reaching outside
    x = torch.randn(1, 6, 11, 13)
    offset = conv.offset_conv(x).clamp(-13 / 4, 13 / 4)
    bias = torch.randn(8)
    expected = torchvision_ops.deform_conv2d(x, offset, conv.regular_conv.weight, bias, padding=1)
    torch.testing.assert_close(deform_conv(x, conv, conv.regular_conv.weight, bias), expected, atol=1e-5, rtol=1e-5)


def test_folded_batch_norm_is_conv_then_batch_norm():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 4, 3, padding=1, bias=True), torch.nn.BatchNorm2d(4).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    x = torch.randn(1, 3, 9, 10)
    weight, bias = bn_folded(conv, bn)
    torch.testing.assert_close(F.conv2d(x, weight, bias, padding=1), bn(conv(x)), atol=1e-5, rtol=1e-5)


def test_dense_maps_are_the_reference_maps(sample_pair):
    aliked = cached_aliked(512, 0.2, 200)
    image, _ = aliked.preprocess(load_image(sample_pair[0]))  # 200 x 200: padded to 224 inside
    maps = aliked.dense_maps(image[None])
    feature_map, score_map = aliked.net.extract_dense_map(image[None].contiguous())  # kornia's forward pass
    torch.testing.assert_close(maps.score_map, score_map, atol=1e-5, rtol=1e-4)
    ys, xs = torch.meshgrid(torch.arange(200), torch.arange(200), indexing="ij")
    features = maps.features_at(ys.reshape(-1), xs.reshape(-1))
    torch.testing.assert_close(features, feature_map[0].permute(1, 2, 0).reshape(-1, feature_map.shape[1]),
                               atol=1e-5, rtol=1e-4)


def test_extract_and_match_choose_their_own_inference_mode(sample_pair):
    """With autograd on, as in a user's program, extraction and matching (one pair and a batch) build no graph:
    the library's entry points run under ``torch.inference_mode`` without the caller's help."""
    from lightmatch.models.factory import load_matcher

    assert torch.is_grad_enabled()
    extractor = cached_aliked(256, 0.2, 320)
    feats = [extractor.extract(load_image(path)) for path in sample_pair[:2]]
    matcher = load_matcher("lightglue", features="aliked", device="cpu")
    results = [matcher.match(*feats), *matcher.match_many([tuple(feats), tuple(feats)])]
    tensors = [t for f in feats for t in (f.keypoints, f.scores, f.descriptors)]
    tensors += [t for m in results for t in (m.matches0, m.scores0)]
    assert not any(t.requires_grad or t.grad_fn is not None for t in tensors)
    assert all(t.is_inference() for t in tensors)
    assert torch.is_grad_enabled() and results[0].num_matches > 50
