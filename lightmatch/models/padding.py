"""Padding of per-image tensors with different point counts into one batch, with a validity mask."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def pad_stack(tensors: Sequence[torch.Tensor], length: Optional[int] = None,
              value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(N_i, ...)`` tensors into ``(B, L, ...)``, padding each to ``L`` (default: the largest ``N_i``).

    Returns the stacked tensor and the ``(B, L)`` boolean mask of real (not padded) entries.
    """
    length = max((len(t) for t in tensors), default=0) if length is None else length
    first = tensors[0]
    out = first.new_full((len(tensors), length, *first.shape[1:]), value)
    mask = torch.zeros((len(tensors), length), dtype=torch.bool, device=first.device)
    for i, t in enumerate(tensors):
        out[i, :len(t)] = t
        mask[i, :len(t)] = True
    return out, mask


def compact(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move the valid entries of each row of ``mask`` ``(..., L)`` to the front and cut every tensor
    ``(..., L, ...)`` (the same leading shape as ``mask``) to the largest number of valid entries.

    Returns the new mask followed by the gathered tensors, in order.
    """
    length = int(mask.sum(-1).max()) if mask.numel() else 0
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices[..., :length]
    out = [torch.gather(mask, -1, order)]
    for t in tensors:
        idx = order.reshape(order.shape + (1,) * (t.dim() - mask.dim())).expand(order.shape + t.shape[mask.dim():])
        out.append(torch.gather(t, mask.dim() - 1, idx))
    return tuple(out)


def compact_pairs(mask: torch.Tensor, split: int, *tensors: torch.Tensor) -> tuple:
    """Cut the padding of pairs laid out as ``(B, T, ...)`` rows, image 0's tokens in ``[0, split)`` and image 1's
    after, where ``mask`` ``(B, T)`` marks the tokens kept: each image's kept tokens move to the front of its side
    and each side is cut to its largest count in the batch.

    Returns the new mask (None when nothing is padded any more), the new split, then the tensors in order. Rows
    whose images keep equally many tokens (always for one pair) need no padding: their tokens are just gathered.
    """
    counts = torch.stack([mask[:, :split].sum(-1), mask[:, split:].sum(-1)], -1)
    (lo0, lo1), (hi0, hi1) = counts.amin(0).tolist(), counts.amax(0).tolist()
    unchanged = (hi0, hi1) == (split, mask.shape[1] - split)
    if lo0 == hi0 and lo1 == hi1:
        if unchanged:
            return (None, split, *tensors)
        return (None, hi0, *(t[mask].view(len(mask), hi0 + hi1, *t.shape[2:]) for t in tensors))
    if unchanged:
        return (mask, split, *tensors)
    mask0, *side0 = compact(mask[:, :split], *(t[:, :split] for t in tensors))
    mask1, *side1 = compact(mask[:, split:], *(t[:, split:] for t in tensors))
    return (torch.cat([mask0, mask1], 1), hi0, *(torch.cat(parts, 1) for parts in zip(side0, side1)))
