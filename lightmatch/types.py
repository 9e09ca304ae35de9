"""Typed containers for what flows between the stages: features of one image, matches of one pair."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import torch


@dataclass
class Features:
    """Local features of one image.

    Attributes:
        keypoints: ``(N, 2)`` float32 ``(x, y)`` in original-image pixels, the centre of the top-left pixel at (0, 0).
        scores: ``(N,)`` float32 detection scores.
        descriptors: ``(N, D)`` float32 descriptors (stored transposed, ``(D, N)``, in HDF5 as hloc does).
        image_size: ``(W, H)`` of the original image.
        scales: optional ``(N,)`` keypoint scales (SIFT), used by matchers that encode scale.
        oris: optional ``(N,)`` keypoint orientations in radians (SIFT).
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: tuple[int, int]
    scales: Optional[torch.Tensor] = None
    oris: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def device(self) -> torch.device:
        return self.keypoints.device

    def to(self, device: torch.device | str) -> "Features":
        """Move every tensor to ``device``."""
        def move(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.to(device)

        return replace(
            self,
            keypoints=move(self.keypoints),
            scores=move(self.scores),
            descriptors=move(self.descriptors),
            scales=move(self.scales),
            oris=move(self.oris),
        )

    @classmethod
    def from_numpy(
        cls,
        keypoints: np.ndarray,
        scores: np.ndarray,
        descriptors: np.ndarray,
        image_size: tuple[int, int],
        scales: Optional[np.ndarray] = None,
        oris: Optional[np.ndarray] = None,
    ) -> "Features":
        """Build from arrays; ``descriptors`` is ``(N, D)``."""
        def t(a: Optional[np.ndarray]) -> Optional[torch.Tensor]:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        size = (int(image_size[0]), int(image_size[1]))
        return cls(t(keypoints), t(scores), t(descriptors), size, t(scales), t(oris))


@dataclass
class Matches:
    """Matches of a pair (image 0 -> image 1), in hloc's convention.

    Attributes:
        matches0: ``(N0,)`` int64: index into image 1's keypoints, or -1.
        scores0: ``(N0,)`` float32 matching confidence (0 where unmatched).
        stop_layer: for adaptive matchers, the number of layers run (0 for matchers without layers).
        info: free-form numbers about the run (e.g. points pruned), for reports.
    """

    matches0: torch.Tensor
    scores0: torch.Tensor
    stop_layer: int = 0
    info: dict = field(default_factory=dict)

    def cpu(self) -> "Matches":
        """The same matches with detached CPU tensors (scores as float32)."""
        return replace(self, matches0=self.matches0.detach().cpu(), scores0=self.scores0.detach().float().cpu())

    @property
    def num_matches(self) -> int:
        return int((self.matches0 > -1).sum())

    def pairs(self) -> np.ndarray:
        """``(M, 2)`` int64 array of matched index pairs ``(i0, i1)``."""
        m0 = self.matches0.cpu().numpy()
        idx0 = np.nonzero(m0 > -1)[0]
        return np.stack([idx0, m0[idx0]], -1).astype(np.int64)

    def matched_scores(self) -> np.ndarray:
        """``(M,)`` confidences of :meth:`pairs`, in the same order."""
        m0 = self.matches0.cpu().numpy()
        return self.scores0.cpu().numpy()[m0 > -1].astype(np.float32)
