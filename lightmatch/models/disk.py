"""DISK through kornia, loaded from the local weights file (the reference LightGlue wraps the same network)."""

from __future__ import annotations

from typing import Optional

import torch
from kornia.feature import DISK as KorniaDISK

from .. import weights
from ..errors import WeightsError
from .base import Extractor


class DISK(Extractor):
    """DISK features (depth-supervised weights). ``max_keypoints=None`` keeps all detections above
    ``detection_threshold``; LightGlue's benchmark sets a count and threshold 0. ``precision="bf16"`` runs the
    U-Net under bf16 autocast (several times faster on a CPU with bf16 matrix units; keypoints move slightly, see
    docs/benchmarks.md)."""

    name = "disk"
    descriptor_dim = 128

    def __init__(self, max_keypoints: Optional[int] = 2048, detection_threshold: float = 0.0, nms_window: int = 5,
                 resize: Optional[int] = 1024, weights_path: Optional[str] = None, precision: str = "fp32") -> None:
        super().__init__(resize=resize, precision=precision)
        self.max_keypoints = max_keypoints if max_keypoints and max_keypoints > 0 else None
        self.detection_threshold = detection_threshold
        self.nms_window = nms_window
        self.net = KorniaDISK()
        state = weights.load_state_dict("disk", weights_path)
        if "extractor" not in state:
            raise WeightsError(f"{weights_path or 'disk-depth-save.pth'}: not a DISK checkpoint (no 'extractor' key)")
        weights.load_into(self.net, state["extractor"], "disk", str(weights_path or ""))
        self.eval()

    def budget_settings(self, n: int) -> tuple[dict, bool]:
        return {"max_keypoints": n, "detection_threshold": 0.0}, True

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.net(image[None], n=self.max_keypoints, window_size=self.nms_window,
                         score_threshold=self.detection_threshold, pad_if_not_divisible=True)[0]
        return feats.keypoints, feats.detection_scores, feats.descriptors
