"""Keypoint geometry shared by the matchers, training and evaluation: normalisation for a network, and
homographies applied to points."""

from __future__ import annotations

import numpy as np
import torch


def normalize_keypoints(kpts: torch.Tensor, size: torch.Tensor, extent: float = 0.5) -> torch.Tensor:
    """Centre ``(..., N, 2)`` pixel keypoints on their image and divide by ``extent`` times its long side.

    ``size``: ``(W, H)`` as ``(2,)`` or ``(..., 2)`` (one per image of a batch). ``extent`` 0.5 maps the long side
    to [-1, 1] (LightGlue), 0.7 to about [-0.72, 0.72] (SuperGlue).
    """
    size = size.to(kpts)[..., None, :]
    return (kpts - size / 2) / (size.max(-1, keepdim=True).values * extent)


def warp_points(points: np.ndarray | torch.Tensor, H: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Points through homographies: tensors ``(..., N, 2)`` through ``(..., 3, 3)`` (their dtype kept), anything
    else as float64 NumPy ``(N, 2)`` through ``(3, 3)``. Points sent to infinity give inf/nan."""
    if isinstance(points, torch.Tensor):
        homog = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ H.transpose(-1, -2)
        return homog[..., :2] / homog[..., 2:]
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homog = np.concatenate([pts, np.ones_like(pts[:, :1])], -1) @ np.asarray(H, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return homog[:, :2] / homog[:, 2:]
