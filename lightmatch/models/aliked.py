"""ALIKED: kornia's network (backbone, score map, SDDH descriptor head) with a choice of keypoint detection.

``nms="reference"`` (default) reproduces the reference detection (ALIKED / LightGlue's ``simple_nms``: ties kept, two
extra rounds of suppression, the keypoints LightGlue's ALIKED weights were trained on); ``nms="strict"`` uses
kornia's strict-local-maxima detection (see the note in ``kornia.feature.ALIKED``).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from kornia.feature.aliked.aliked import ALIKED as KorniaALIKED
from kornia.feature.aliked.aliked import DeformableConv2d

from .. import weights
from ..errors import ConfigError
from .base import Extractor

MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")
NmsMode = Literal["reference", "strict"]


class TorchvisionDeformableConv2d(DeformableConv2d):
    """kornia's deformable convolution computed by torchvision's native kernel (same parameters, same result;
    kornia's pure-PyTorch version is several times slower on the CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import deform_conv2d

        h, w = x.shape[2:]
        out = self.offset_conv(x)
        mask_w = None
        if self.mask:
            o1, o2, mask_w = torch.chunk(out, 3, dim=1)
            out, mask_w = torch.cat((o1, o2), dim=1), torch.sigmoid(mask_w)
        offset = out.clamp(-max(h, w) / 4.0, max(h, w) / 4.0)
        return deform_conv2d(x, offset, self.regular_conv.weight, self.regular_conv.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask_w)


def use_native_deform_conv(module: torch.nn.Module) -> None:
    """Switch every kornia deformable convolution in ``module`` to torchvision's kernel when torchvision loads."""
    try:
        import torchvision.ops  # noqa: F401
    except Exception:  # torchvision missing or built for another torch: keep kornia's implementation
        return
    for sub in module.modules():
        if type(sub) is DeformableConv2d:
            sub.__class__ = TorchvisionDeformableConv2d


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The reference's NMS on ``(B, 1, H, W)`` scores: window maxima (ties kept), plus two rounds that add the maxima
    of what remains once the windows of the points kept so far are suppressed. Suppressed scores become 0."""
    def max_pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    keep = scores == max_pool(scores)
    for _ in range(2):
        suppressed = max_pool(keep.float()) > 0
        remaining = torch.where(suppressed, zeros, scores)
        keep = keep | ((remaining == max_pool(remaining)) & ~suppressed)
    return torch.where(keep, scores, zeros)


def select_indices(nms_scores: torch.Tensor, scores: torch.Tensor, top_k: int, threshold: float,
                   limit: int) -> torch.Tensor:
    """Flat indices of the detections in one ``(H, W)`` map, as the reference's DKD selects them.

    ``top_k > 0``: the ``top_k`` highest NMS scores. Otherwise scores above ``threshold`` (or above the mean score
    when ``threshold <= 0`` or nothing passes it), at most ``limit`` of them, the highest first.
    """
    flat = nms_scores.reshape(-1)
    if top_k > 0:
        return torch.topk(flat, min(top_k, flat.numel())).indices
    mask = flat > threshold if threshold > 0 else torch.zeros_like(flat, dtype=torch.bool)
    if threshold <= 0 or not bool(mask.any()):
        mask = flat > scores.mean()
    indices = mask.nonzero()[:, 0]
    if len(indices) > limit:
        order = scores.reshape(-1)[indices].sort(descending=True)[1]
        indices = indices[order[:limit]]
    return indices


def refine_subpixel(score_map: torch.Tensor, indices: torch.Tensor, radius: int,
                    temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax refinement of detections at flat ``indices`` of a ``(H, W)`` score map.

    Returns keypoints ``(N, 2)`` normalised to [-1, 1] (align_corners convention) and their bilinear scores ``(N,)``.
    Only the ``(2r+1)^2`` windows around the detections are gathered (the reference unfolds the whole map).
    """
    h, w = score_map.shape
    if len(indices) == 0:
        return score_map.new_zeros((0, 2)), score_map.new_zeros((0,))
    k = 2 * radius + 1
    axis = torch.linspace(-radius, radius, k, device=score_map.device, dtype=score_map.dtype)
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1)  # (k*k, 2) as (x, y)
    offsets = torch.arange(-radius, radius + 1, device=score_map.device)
    padded = F.pad(score_map, (radius, radius, radius, radius))
    ys, xs = torch.div(indices, w, rounding_mode="trunc"), indices % w
    rows = (ys[:, None] + offsets[None] + radius)[:, :, None]
    cols = (xs[:, None] + offsets[None] + radius)[:, None, :]
    patches = padded[rows, cols].reshape(len(indices), k * k)
    weights_ = ((patches - patches.max(dim=1, keepdim=True).values) / temperature).exp()
    residual = weights_ @ grid / weights_.sum(dim=1)[:, None]
    xy = torch.stack([xs, ys], 1) + residual
    wh = torch.tensor([w - 1, h - 1], device=score_map.device)
    xy = xy / wh * 2 - 1
    kpt_scores = F.grid_sample(score_map[None, None], xy.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
    return xy, kpt_scores[0, 0, 0]


class ALIKED(Extractor):
    """ALIKED features. ``max_keypoints`` caps the count (``-1``: no cap); with ``detection_threshold <= 0`` exactly
    ``max_keypoints`` are returned (top-k mode, as LightGlue's benchmark)."""

    descriptor_dim = 128

    def __init__(self, model: str = "aliked-n16", max_keypoints: int = 2048, detection_threshold: float = 0.2,
                 nms_radius: int = 2, nms: NmsMode = "reference", resize: Optional[int] = 1024,
                 weights_path: Optional[str] = None) -> None:
        super().__init__(resize=resize)
        if model not in MODELS:
            raise ConfigError(f"unknown ALIKED model '{model}': choose from {', '.join(MODELS)}")
        if nms not in ("reference", "strict"):
            raise ConfigError(f"unknown ALIKED NMS '{nms}': choose reference or strict")
        self.name = model
        self.max_keypoints = max_keypoints
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.nms = nms
        self.net = KorniaALIKED(model, max_num_keypoints=max_keypoints, detection_threshold=detection_threshold,
                                nms_radius=nms_radius)
        self.descriptor_dim = self.net.desc_head.sf_conv.out_channels
        use_native_deform_conv(self.net)
        state = weights.load_state_dict(model, weights_path)
        state = {f"net.{k}": v for k, v in state.items()}
        weights.load_into(self, state, model, str(weights_path or ""), ignore_missing=("net.dkd.hw_grid",))
        self.eval()

    def detect(self, score_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints ``(N, 2)`` in [-1, 1] and scores ``(N,)`` from a ``(1, 1, H, W)`` score map."""
        if self.nms == "strict":
            keypoints, scores, _ = self.net.dkd(score_map)
            return keypoints[0], scores[0]
        r = self.nms_radius
        nms_scores = simple_nms(score_map, r)[0, 0]
        nms_scores[:r, :] = 0
        nms_scores[:, :r] = 0
        nms_scores[-r:, :] = 0
        nms_scores[:, -r:] = 0
        top_k = -1 if self.detection_threshold > 0 else self.max_keypoints
        limit = self.max_keypoints if self.max_keypoints > 0 else KorniaALIKED.n_limit_max
        indices = select_indices(nms_scores, score_map[0, 0], top_k, self.detection_threshold, limit)
        return refine_subpixel(score_map[0, 0], indices, r)

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = image[None]
        feature_map, score_map = self.net.extract_dense_map(image)
        keypoints, scores = self.detect(score_map)
        if len(keypoints) == 0:
            return keypoints, scores, keypoints.new_zeros((0, self.descriptor_dim))
        descriptors = self.net.desc_head(feature_map, [keypoints])[0][0]
        h, w = image.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], device=image.device, dtype=keypoints.dtype)
        return wh * (keypoints + 1) / 2.0, scores, descriptors.reshape(len(keypoints), -1)
