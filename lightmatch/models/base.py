"""The two model interfaces: an :class:`Extractor` turns an image into :class:`Features`, a :class:`Matcher` turns
two :class:`Features` into :class:`Matches`."""

from __future__ import annotations

from typing import Optional, Sequence

import kornia
import torch
from torch import nn

from ..types import Features, Matches


def resize_for_network(image: torch.Tensor, long_side: Optional[int]) -> tuple[torch.Tensor, tuple[float, float]]:
    """Resize ``(C, H, W)`` so its long side is ``long_side`` (antialiased bilinear, as LightGlue's preprocessing).

    Returns the resized image and the scale ``(sx, sy) = (new / old)`` per axis. ``None`` keeps the size.
    """
    h, w = image.shape[-2:]
    if long_side is not None and max(h, w) != long_side:
        image = kornia.geometry.transform.resize(image[None], long_side, side="long", antialias=True)[0]
    return image, (image.shape[-1] / w, image.shape[-2] / h)


def to_original_pixels(keypoints: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Map ``(N, 2)`` keypoints found on a resized image back: ``(k + 0.5) / scale - 0.5``."""
    s = keypoints.new_tensor(scale)
    return (keypoints + 0.5) / s - 0.5


class Extractor(nn.Module):
    """Detects and describes local features.

    Subclasses implement :meth:`detect_and_describe` on an image already resized for the network; :meth:`extract`
    does the resizing and maps keypoints back to original pixels.
    """

    name: str = "extractor"
    descriptor_dim: int = 0
    grayscale: bool = False

    def __init__(self, resize: Optional[int] = 1024) -> None:
        super().__init__()
        self.resize = resize

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(C, H, W)`` float image in [0, 1] -> keypoints ``(N, 2)`` in its pixels, scores ``(N,)``,
        descriptors ``(N, D)``."""
        raise NotImplementedError

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        """Extract features from a ``(C, H, W)`` float image in [0, 1] at original resolution."""
        h, w = image.shape[-2:]
        image = image.to(self.device)
        if self.grayscale and image.shape[0] == 3:
            image = kornia.color.rgb_to_grayscale(image[None])[0]
        elif not self.grayscale and image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        resized, scale = resize_for_network(image, self.resize)
        kpts, scores, desc = self.detect_and_describe(resized)
        return Features(
            keypoints=to_original_pixels(kpts.float(), scale).contiguous(),
            scores=scores.float().contiguous(),
            descriptors=desc.float().contiguous(),
            image_size=(int(w), int(h)),
        )


class Matcher(nn.Module):
    """Matches the features of two images."""

    name: str = "matcher"

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Match image 0's features to image 1's; see :class:`~lightmatch.types.Matches`."""
        raise NotImplementedError

    def match_many(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """Match several pairs; matchers that batch them (padded, masked) override this. Default: one by one."""
        return [self.match(f0, f1) for f0, f1 in pairs]
