"""models/padding.py: cutting the padding of pairs laid out image 0 then image 1 in one row of tokens."""

from __future__ import annotations

import torch

from lightmatch.models.lightglue import LightGlue
from lightmatch.models.padding import compact_pairs
from lightmatch.types import Features


def test_compact_pairs_cuts_each_side_to_its_largest_count():
    # 2 pairs, image 0 in columns 0-2, image 1 in columns 3-6
    mask = torch.tensor([[True, False, True, True, False, False, True],
                         [False, False, True, True, True, True, False]])
    values = torch.arange(14.0).view(2, 7)
    new_mask, split, new_values = compact_pairs(mask, 3, values)
    assert split == 2
    assert new_mask.tolist() == [[True, True, True, True, False], [True, False, True, True, True]]
    assert new_values[0, :4].tolist() == [0.0, 2.0, 3.0, 6.0]
    assert new_values[1, [0, 2, 3, 4]].tolist() == [9.0, 10.0, 11.0, 12.0]


def test_compact_pairs_without_padding_left_drops_the_mask():
    values = torch.arange(12.0).view(2, 6, 1)
    full = torch.ones(2, 6, dtype=torch.bool)
    new_mask, split, same = compact_pairs(full, 2, values)
    assert new_mask is None and split == 2 and same is values  # nothing cut: the same tensor
    kept = torch.tensor([[True, False, True, False, True, True], [False, True, True, True, False, True]])
    new_mask, split, new_values = compact_pairs(kept, 2, values)  # one point left in each image 0, three in image 1
    assert new_mask is None and split == 1
    assert new_values[..., 0].tolist() == [[0.0, 2.0, 4.0, 5.0], [7.0, 8.0, 9.0, 11.0]]


def test_a_single_pair_runs_unpadded_and_unmasked(monkeypatch):
    """``match`` is a batch of one: every layer sees all the pair's tokens (pruned ones cut), never a mask."""
    g = torch.Generator().manual_seed(0)

    def feats(n: int) -> Features:
        return Features(torch.rand(n, 2, generator=g) * 500, torch.rand(n, generator=g),
                        torch.nn.functional.normalize(torch.randn(n, 128, generator=g), dim=1), (640, 480))

    lg = LightGlue("aliked")
    seen = []
    layer_type = type(lg.transformers[0])
    forward = layer_type.forward

    def spy(self, x, split, cos, sin, mask=None):
        seen.append((x.shape[0], mask))
        return forward(self, x, split, cos, sin, mask)

    monkeypatch.setattr(layer_type, "forward", spy)
    lg.match(feats(300), feats(250))
    assert seen and all(b == 1 and mask is None for b, mask in seen)
    seen.clear()
    lg.match_many([(feats(300), feats(250)), (feats(200), feats(280))])
    assert seen[0][0] == 2 and seen[0][1] is not None  # two pairs of different sizes: padded and masked
