"""DISK through kornia, loaded from the local weights file (the reference LightGlue wraps the same network).

In fp32 the network runs exactly as kornia's (the reference's features). In bf16 (``precision="bf16"``) the U-Net's
weights are cast once and it runs channels-last: the U-Net is almost all of DISK's time, and in bf16 oneDNN's
convolutions run several times faster on a CPU with bf16 matrix units. Keypoints are then detected on the fp32
heatmap and descriptors normalised in fp32; only the 2048-odd descriptor columns used are converted.

``backend="openvino"`` runs the U-Net in OpenVINO instead (:mod:`lightmatch.models.openvino_backend`), in fp32 or
bf16, with the same detection and description on its output.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from kornia.feature import DISK as KorniaDISK
from kornia.feature.disk.detector import heatmap_to_keypoints

from .. import weights
from ..defaults import NO_KEYPOINT_CAP
from ..errors import ConfigError, WeightsError
from .base import Extractor
from .openvino_backend import OpenVINONetwork

BACKENDS = ("torch", "openvino")
PAD_MULTIPLE = 16  # the U-Net needs sizes divisible by this; kornia zero-pads at the bottom and right


class DISK(Extractor):
    """DISK features (depth-supervised weights). ``max_keypoints=-1`` keeps all detections above
    ``detection_threshold``; LightGlue's benchmark sets a count and threshold 0. ``precision="bf16"`` runs the
    U-Net in bf16 (keypoints move slightly; see docs/benchmarks.md for speed and agreement). ``backend="openvino"``
    runs the U-Net in OpenVINO (CPU)."""

    name = "disk"
    descriptor_dim = 128

    def __init__(self, max_keypoints: Optional[int] = 2048, detection_threshold: float = 0.0, nms_window: int = 5,
                 resize: Optional[int] = 1024, weights_path: Optional[str] = None, precision: str = "fp32",
                 backend: str = "torch", upsample: bool = True) -> None:
        super().__init__(resize=resize, precision=precision, upsample=upsample)
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{backend}': choose {', '.join(BACKENDS)}")
        self.backend = backend
        self.max_keypoints = max_keypoints if max_keypoints and max_keypoints > 0 else NO_KEYPOINT_CAP
        self.detection_threshold = detection_threshold
        self.nms_window = nms_window
        self.net = KorniaDISK()
        state = weights.load_state_dict("disk", weights_path)
        if "extractor" not in state:
            raise WeightsError(f"{weights_path or 'disk-depth-save.pth'}: not a DISK checkpoint (no 'extractor' key)")
        weights.load_into(self.net, state["extractor"], "disk", str(weights_path or ""))
        self._openvino = OpenVINONetwork(self.net.unet, 3, precision) if backend == "openvino" else None
        if self.compute_dtype is not None and self._openvino is None:
            self.net.unet.to(dtype=self.compute_dtype, memory_format=torch.channels_last)
        self.eval()

    def autocast(self) -> contextlib.AbstractContextManager:
        """No autocast: the U-Net's weights are already in the compute dtype (autocast would also run every batch
        norm in fp32, converting full-resolution maps back and forth)."""
        return contextlib.nullcontext()

    def budget_settings(self, n: int) -> tuple[dict, bool]:
        return {"max_keypoints": n, "detection_threshold": 0.0}, True

    def detector_settings(self) -> dict:
        # no cap is not recorded (as stores written before recorded DISK's)
        return {"max_keypoints": self.max_keypoints if self.max_keypoints > 0 else None,
                "detection_threshold": self.detection_threshold}

    @property
    def _top_k(self) -> Optional[int]:
        """kornia's spelling of the cap: None for none."""
        return self.max_keypoints if self.max_keypoints > 0 else None

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.compute_dtype is None and self._openvino is None:
            feats = self.net(image[None], n=self._top_k, window_size=self.nms_window,
                             score_threshold=self.detection_threshold, pad_if_not_divisible=True)[0]
            return feats.keypoints, feats.detection_scores, feats.descriptors
        h, w = image.shape[-2:]
        padded = F.pad(image[None], (0, (-w) % PAD_MULTIPLE, 0, (-h) % PAD_MULTIPLE))
        if self._openvino is not None:
            out = self._openvino(padded).to(image.device)
        else:
            out = self.net.unet(padded.to(self.compute_dtype).contiguous(memory_format=torch.channels_last))
        dim = self.net.desc_dim
        heatmap = out[:, dim:, :h, :w].float().contiguous()
        keypoints = heatmap_to_keypoints(heatmap, n=self._top_k, window_size=self.nms_window,
                                         score_threshold=self.detection_threshold)[0]
        x, y = keypoints.xys.T
        descriptors = F.normalize(out[0, :dim, y, x].T.float(), dim=-1)
        return keypoints.xys.float(), keypoints.detection_logp, descriptors
