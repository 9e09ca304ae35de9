"""SIFT through OpenCV (``cv2.SIFT_create``), optionally as RootSIFT, with scales and orientations.

OpenCV's keypoint ``pt`` puts the centre of the top-left pixel at (0, 0), our convention, so coordinates are used
as they are. Scales are OpenCV's ``size`` (diameter of the meaningful neighbourhood) mapped back to original-image
pixels; orientations are OpenCV's ``angle`` converted to radians.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..types import Features
from .base import Extractor, to_original_pixels


def sift_to_rootsift(desc: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, square root, L2-normalise. ``(N, D) -> (N, D)``."""
    desc = F.normalize(desc, p=1, dim=-1, eps=eps).clamp(min=eps).sqrt()
    return F.normalize(desc, p=2, dim=-1, eps=eps)


class SIFT(Extractor):
    """OpenCV SIFT keypoints and 128-d descriptors.

    Args:
        resize: long side of the network image (None keeps the original size).
        max_keypoints: keep the best ``k`` by detector response; -1 (or None) keeps all.
        rootsift: return RootSIFT descriptors (unit L2 norm); otherwise OpenCV's raw descriptors L2-normalised.
        contrast_threshold: OpenCV's ``contrastThreshold`` (lower finds more, weaker points; the default is
            LightGlue's, from COLMAP's peak threshold).
        edge_threshold: OpenCV's ``edgeThreshold``.
        n_octave_layers: OpenCV's ``nOctaveLayers``.
        sigma: OpenCV's ``sigma`` of the first octave's Gaussian.
        detection_threshold: alias of ``contrast_threshold`` (LightGlue's name, used by the CLI); wins when given.
            A negative threshold means none (0).

    :meth:`run` (and so :meth:`extract`) fills ``Features.scales`` (pixels of the original image) and
    ``Features.oris`` (radians).
    """

    name = "sift"
    descriptor_dim = 128
    grayscale = True

    def __init__(
        self,
        resize: Optional[int] = 1024,
        max_keypoints: Optional[int] = 4096,
        rootsift: bool = True,
        contrast_threshold: float = 0.0066667,
        edge_threshold: float = 10.0,
        n_octave_layers: int = 3,
        sigma: float = 1.6,
        detection_threshold: Optional[float] = None,
        precision: str = "fp32",
        upsample: bool = True,
    ) -> None:
        super().__init__(resize=resize, precision=precision, upsample=upsample)
        max_keypoints = -1 if max_keypoints is None else int(max_keypoints)
        if max_keypoints == 0 or max_keypoints < -1:
            raise ConfigError(f"sift: max_keypoints must be positive or -1 (all), got {max_keypoints}")
        self.max_keypoints = int(max_keypoints)
        self.rootsift = bool(rootsift)
        threshold = float(contrast_threshold if detection_threshold is None else detection_threshold)
        self.contrast_threshold = max(threshold, 0.0)  # negative: disabled, as for the other extractors
        self.edge_threshold = float(edge_threshold)
        self.n_octave_layers = int(n_octave_layers)
        self.sigma = float(sigma)

    def detector_settings(self) -> dict:
        return {"max_keypoints": self.max_keypoints}

    def _sift(self) -> "cv2.SIFT":
        # A fresh detector per call (cheap): no shared OpenCV state between threads, and the module stays picklable.
        return cv2.SIFT_create(nfeatures=0, nOctaveLayers=self.n_octave_layers,
                               contrastThreshold=self.contrast_threshold, edgeThreshold=self.edge_threshold,
                               sigma=self.sigma)

    def detect(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run OpenCV on a ``(1, H, W)`` grayscale image in [0, 1].

        Returns:
            keypoints ``(N, 2)``, responses ``(N,)``, sizes ``(N,)``, angles in radians ``(N,)``, raw descriptors
            ``(N, 128)``; the best ``max_keypoints`` by response, in decreasing order of response.
        """
        if image.dim() != 3 or image.shape[0] != 1:
            raise ConfigError(f"sift: expected a (1, H, W) grayscale image, got shape {tuple(image.shape)}")
        img = (image[0].detach().float().cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        detections, desc = self._sift().detectAndCompute(img, None)
        n = len(detections)
        kpts = np.array([k.pt for k in detections], dtype=np.float32).reshape(n, 2)
        resp = np.array([k.response for k in detections], dtype=np.float32)
        sizes = np.array([k.size for k in detections], dtype=np.float32)
        angles = np.deg2rad(np.array([k.angle for k in detections], dtype=np.float32))
        desc = np.zeros((0, 128), np.float32) if desc is None else desc.astype(np.float32)
        order = np.argsort(-resp, kind="stable")
        if self.max_keypoints >= 0:
            order = order[: self.max_keypoints]
        return kpts[order], resp[order], sizes[order], angles[order], desc[order]

    def describe(self, desc: np.ndarray) -> torch.Tensor:
        """OpenCV's raw ``(N, 128)`` descriptors as RootSIFT, or L2-normalised."""
        d = torch.from_numpy(desc)
        return sift_to_rootsift(d) if self.rootsift else F.normalize(d, dim=-1)

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(1, H, W)`` grayscale in [0, 1] -> keypoints ``(N, 2)``, responses ``(N,)``, descriptors ``(N, 128)``."""
        kpts, resp, _, _, desc = self.detect(image)
        return torch.from_numpy(kpts), torch.from_numpy(resp), self.describe(desc)

    @torch.inference_mode()
    def run(self, image: torch.Tensor, scale: tuple[float, float], image_size: tuple[int, int]) -> Features:
        """As :meth:`Extractor.run`, with ``scales`` (original-image pixels) and ``oris`` (radians) filled in."""
        kpts, resp, sizes, angles, desc = self.detect(image)
        mean_scale = (scale[0] + scale[1]) / 2  # network pixels per original pixel
        return Features(
            keypoints=to_original_pixels(torch.from_numpy(kpts), scale).contiguous(),
            scores=torch.from_numpy(resp),
            descriptors=self.describe(desc).contiguous(),
            image_size=(int(image_size[0]), int(image_size[1])),
            scales=torch.from_numpy(sizes / mean_scale),
            oris=torch.from_numpy(angles),
        )
