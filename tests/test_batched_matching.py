"""Batched, padded, masked matching: the same result per pair as matching one by one, for LightGlue and SuperGlue."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import cached_aliked

from lightmatch.models.lightglue import LightGlue
from lightmatch.models.padding import compact, pad_stack
from lightmatch.models.superglue import SuperGlue
from lightmatch.types import Features


@functools.lru_cache(maxsize=None)
def sample_features(max_keypoints: int) -> tuple[Features, Features]:
    from conftest import ASSETS

    from lightmatch.io.images import load_image

    extractor = cached_aliked(max_keypoints, -1.0, 640)
    return (extractor.extract(load_image(ASSETS / "sample0.jpg")),
            extractor.extract(load_image(ASSETS / "sample1.jpg")))


def subset(f: Features, n: int, seed: int) -> Features:
    idx = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Features(f.keypoints[idx], f.scores[idx], f.descriptors[idx], f.image_size)


def pairs_of_different_sizes() -> list[tuple[Features, Features]]:
    f0, f1 = sample_features(512)
    return [(f0, f1), (subset(f0, 300, 0), subset(f1, 420, 1)), (subset(f1, 90, 2), subset(f0, 500, 3)),
            (subset(f0, 200, 4), f1)]


def assert_same(batched, single) -> None:
    """Identical matches, stop layers and pruning; scores equal up to float32 rounding. Padding changes the length of
    the softmax reductions, so the summation order: after 9 layers that moves scores by up to ~4e-5, as much as
    swapping the attention kernel of the single-pair path does (measured 2e-5): 1e-4 bounds the worst point, 1e-6
    the median."""
    for b, s in zip(batched, single):
        assert torch.equal(b.matches0, s.matches0)
        diff = (b.scores0 - s.scores0).abs()
        assert diff.max().item() < 1e-4 and diff.median().item() < 1e-6
        assert b.stop_layer == s.stop_layer and b.info == s.info


@pytest.mark.parametrize("depth,width", [(-1, -1), (0.95, 0.99), (0.9, 0.95)])
def test_lightglue_batched_equals_one_by_one(depth, width):
    lg = LightGlue("aliked", depth_confidence=depth, width_confidence=width)
    pairs = pairs_of_different_sizes()
    single = [lg.match(a, b) for a, b in pairs]
    batched = lg.match_many(pairs)
    assert_same(batched, single)
    assert sum(m.num_matches for m in single) > 300
    if depth > 0:  # adaptivity acts per pair: not every pair stops at the same layer or prunes the same points
        assert len({m.stop_layer for m in single}) > 1 or len({m.info["pruned0"] for m in single}) > 1


def test_lightglue_batch_with_empty_pair():
    lg = LightGlue("aliked")
    f0, f1 = sample_features(512)
    empty = Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 128), (640, 480))
    out = lg.match_many([(f0, empty), (f0, f1), (empty, f1)])
    assert out[0].matches0.tolist() == [-1] * len(f0) and out[2].matches0.shape == (0,)
    assert torch.equal(out[1].matches0, lg.match(f0, f1).matches0)


def test_lightglue_training_forward_ignores_padding():
    """The per-layer log assignment of a pair does not change when it is padded (more points elsewhere)."""
    torch.manual_seed(0)
    lg = LightGlue("aliked", pretrained=False)
    f0, f1 = sample_features(512)
    small = (subset(f0, 100, 5), subset(f1, 120, 6))
    alone = lg.pad_pairs([small])
    padded = lg.pad_pairs([small, (f0, f1)])
    la_alone = lg.log_assignment[-1].log_assignment_batch(lg(alone)[-1], alone.mask)[0]
    la_padded = lg.log_assignment[-1].log_assignment_batch(lg(padded)[-1], padded.mask)[0]
    rows, cols = list(range(100)) + [-1], list(range(120)) + [-1]  # the pair's points and the dustbins
    expected, got = la_alone[rows][:, cols], la_padded[rows][:, cols]
    assert torch.allclose(got[:-1, :-1], expected[:-1, :-1], atol=1e-4)
    assert torch.allclose(got[:-1, -1], expected[:-1, -1], atol=1e-5)
    assert torch.isinf(la_padded[100:-1, :-1]).all() and torch.isfinite(la_padded[:-1, -1]).all()


def test_checkpointed_forward_gives_the_same_gradients():
    torch.manual_seed(0)
    lg = LightGlue("aliked", pretrained=False).train()
    f0, f1 = sample_features(512)
    batch = lg.pad_pairs([(subset(f0, 64, 0), subset(f1, 64, 1))])
    grads = []
    with torch.enable_grad():
        for ckpt in (False, True):
            lg.zero_grad()
            lg(batch, checkpointing=ckpt)[-1].square().mean().backward()
            grads.append(lg.transformers[0].self_attn.Wqkv.weight.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


def sg_features(f: Features, seed: int) -> Features:
    """256-d descriptors for SuperGlue (random projection of ALIKED's, normalised)."""
    proj = torch.randn(128, 256, generator=torch.Generator().manual_seed(99))
    return Features(f.keypoints, f.scores, torch.nn.functional.normalize(f.descriptors @ proj, dim=-1), f.image_size)


def test_superglue_batched_equals_one_by_one():
    torch.manual_seed(0)
    sg = SuperGlue(pretrained=False, gnn_layers=("self", "cross") * 2, sinkhorn_iterations=20, match_threshold=0.0)
    with torch.no_grad():
        sg.final_proj.weight.copy_(torch.eye(256)[..., None] * 8)  # descriptor similarity decides: many matches
    pairs = [(sg_features(a, 0), sg_features(b, 1)) for a, b in pairs_of_different_sizes()]
    single = [sg.match(a, b) for a, b in pairs]
    batched = sg.match_many(pairs)
    assert_same(batched, single)
    assert sum(m.num_matches for m in single) > 100


def test_pad_stack_and_compact():
    out, mask = pad_stack([torch.ones(2, 3), torch.ones(4, 3) * 2])
    assert out.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert out[0, 2:].abs().sum() == 0
    values = torch.arange(8.0).view(2, 4)
    keep = torch.tensor([[False, True, False, True], [True, False, False, False]])
    new_mask, new_values = compact(keep, values)
    assert new_mask.tolist() == [[True, True], [True, False]] and new_values[0].tolist() == [1.0, 3.0]
    assert new_values[1, 0] == 4.0
