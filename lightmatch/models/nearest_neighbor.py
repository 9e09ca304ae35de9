"""Mutual nearest-neighbour matching of descriptors, with optional ratio test and distance threshold.

Descriptors are L2-normalised first, so the nearest neighbour is the one of highest cosine similarity and
distances are Euclidean distances between unit vectors (``sqrt(2 - 2 sim)``, in [0, 2]), as hloc's
``nearest_neighbor`` matcher. The similarity matrix is processed in row blocks, so memory stays bounded for large
keypoint counts. Works on any device; computation is in float32.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..types import Features, Matches
from .base import Matcher


def _passes(sim_best: torch.Tensor, sim_second: Optional[torch.Tensor], ratio_threshold: Optional[float],
            distance_threshold: Optional[float]) -> torch.Tensor:
    """Which nearest neighbours pass the ratio test and distance threshold (on squared unit-vector distances)."""
    d2_best = (2 - 2 * sim_best).clamp(min=0)
    ok = torch.ones_like(sim_best, dtype=torch.bool)
    if ratio_threshold is not None and sim_second is not None:
        d2_second = (2 - 2 * sim_second).clamp(min=0)
        ok &= d2_best <= (ratio_threshold ** 2) * d2_second
    if distance_threshold is not None:
        ok &= d2_best <= distance_threshold ** 2
    return ok


def nearest_neighbor_match(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    ratio_threshold: Optional[float] = None,
    distance_threshold: Optional[float] = None,
    mutual_check: bool = True,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour matches from image 0 to image 1.

    Args:
        desc0: ``(N0, D)`` descriptors; desc1 ``(N1, D)`` (normalised here, any scale accepted).
        ratio_threshold: keep a match when ``d(best) <= ratio * d(second best)`` (Lowe's test); None disables.
            With mutual check, the test must pass in both directions (as hloc).
        distance_threshold: keep a match when the unit-vector distance ``<=`` this (in [0, 2]); None disables.
        mutual_check: keep only matches that are each other's nearest neighbour.
        chunk_size: rows of the similarity matrix processed at once.

    Returns:
        matches0 ``(N0,)`` int64 index into image 1 or -1; scores0 ``(N0,)`` float32 in [0, 1],
        ``(1 + cosine similarity) / 2`` for matches, 0 elsewhere.
    """
    n0, n1 = desc0.shape[0], desc1.shape[0]
    device = desc0.device
    if n0 == 0 or n1 == 0:
        return (torch.full((n0,), -1, dtype=torch.int64, device=device),
                torch.zeros(n0, dtype=torch.float32, device=device))
    if desc0.shape[1] != desc1.shape[1]:
        raise ConfigError(f"nearest-neighbour matcher: descriptor sizes differ ({desc0.shape[1]} vs {desc1.shape[1]})")
    d0 = F.normalize(desc0.float(), dim=-1)
    d1 = F.normalize(desc1.to(device).float(), dim=-1)
    k = 2 if n1 >= 2 else 1
    kc = 2 if n0 >= 2 else 1

    row_val = torch.empty((n0, k), device=device)
    row_idx = torch.empty((n0, k), dtype=torch.int64, device=device)
    col_val = torch.full((kc, n1), -float("inf"), device=device)
    col_idx = torch.full((kc, n1), -1, dtype=torch.int64, device=device)
    for start in range(0, n0, chunk_size):
        sim = d0[start:start + chunk_size] @ d1.T  # (c, N1)
        row_val[start:start + len(sim)], row_idx[start:start + len(sim)] = sim.topk(k, dim=1)
        if mutual_check:
            kk = min(kc, len(sim))
            cv, ci = sim.topk(kk, dim=0)
            merged_val = torch.cat([col_val, cv], 0)
            merged_idx = torch.cat([col_idx, ci + start], 0)
            top_val, top_pos = merged_val.topk(kc, dim=0)
            col_val, col_idx = top_val, merged_idx.gather(0, top_pos)

    best = row_idx[:, 0]
    ok0 = _passes(row_val[:, 0], row_val[:, 1] if k == 2 else None, ratio_threshold, distance_threshold)
    if mutual_check:
        ok1 = _passes(col_val[0], col_val[1] if kc == 2 else None, ratio_threshold, distance_threshold)
        mutual = col_idx[0].gather(0, best) == torch.arange(n0, device=device)
        ok0 &= mutual & ok1.gather(0, best)
    matches0 = torch.where(ok0, best, torch.full_like(best, -1))
    scores0 = torch.where(ok0, ((row_val[:, 0] + 1) / 2).clamp(0, 1), torch.zeros_like(row_val[:, 0]))
    return matches0, scores0


class NearestNeighborMatcher(Matcher):
    """Mutual nearest neighbour on any descriptors (see :func:`nearest_neighbor_match`).

    Args:
        ratio_threshold: Lowe's ratio (e.g. 0.8 for SIFT); None disables.
        distance_threshold: maximum unit-vector distance in [0, 2] (e.g. 0.7); None disables.
        mutual_check: keep only mutual nearest neighbours.
        chunk_size: rows of the similarity matrix processed at once (bounds memory).

    Runs where the module lives (``.to(device)``); features are moved there.
    """

    name = "nn"

    def __init__(self, ratio_threshold: Optional[float] = None, distance_threshold: Optional[float] = None,
                 mutual_check: bool = True, chunk_size: int = 4096) -> None:
        super().__init__()
        if ratio_threshold is not None and not 0 < ratio_threshold <= 1:
            raise ConfigError(f"nearest-neighbour matcher: ratio_threshold must be in (0, 1], got {ratio_threshold}")
        if distance_threshold is not None and distance_threshold < 0:
            raise ConfigError(f"nearest-neighbour matcher: distance_threshold must be >= 0, got {distance_threshold}")
        if chunk_size < 1:
            raise ConfigError(f"nearest-neighbour matcher: chunk_size must be >= 1, got {chunk_size}")
        self.ratio_threshold = ratio_threshold
        self.distance_threshold = distance_threshold
        self.mutual_check = mutual_check
        self.chunk_size = int(chunk_size)
        # No parameters: a buffer carries the device so that ``.to(device)`` works as for the other matchers.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def matching_settings(self) -> dict:
        return {"ratio_threshold": self.ratio_threshold, "distance_threshold": self.distance_threshold}

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @torch.inference_mode()
    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Match image 0's descriptors to image 1's."""
        m0, s0 = nearest_neighbor_match(
            feats0.descriptors.to(self.device), feats1.descriptors.to(self.device),
            self.ratio_threshold, self.distance_threshold, self.mutual_check, self.chunk_size,
        )
        return Matches(m0, s0)
