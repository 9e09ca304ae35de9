"""ALIKED: kornia's network parameters (the official names, loaded strictly) run by our own forward pass, with a
choice of keypoint detection.

The forward pass computes what the reference computes, reordered so that nothing of 128 channels is ever made at
full resolution (the reference concatenates four 32-channel maps into one, L2-normalises all of it and runs a 1x1
convolution over it, most of its time):

* the score head's first 1x1 convolution is linear, and so is bilinear upsampling, so it runs on each of the four
  32-channel maps at its own resolution and only its 8-channel results are upsampled and summed;
* descriptors need the normalised feature map at a few pixels only (the 3x3 patch around each keypoint and the
  four neighbours of each deformable sample), so those pixels are computed alone from the four maps;
* feature maps are channels-last (oneDNN's fast layout for these small channel counts), batch norms are folded into
  their convolutions, and the full-resolution chain ``conv1`` -> SELU -> the head's 1x1 runs in bands of rows;
* the deformable convolutions gather their bilinear taps with ``embedding_bag`` and run one GEMM (torchvision's
  CPU kernel, which the reference uses, is scalar).

docs/benchmarks.md has the measurements of each step.

The keypoints are the reference's (within float rounding; the parity tests hold them to 1e-3 px and the
descriptors to 1e-4). ``nms="reference"`` (default) reproduces the reference detection (ALIKED / LightGlue's
``simple_nms``: ties kept, two extra rounds of suppression, the keypoints LightGlue's ALIKED weights were trained on);
``nms="strict"`` uses kornia's strict-local-maxima detection (see the note in ``kornia.feature.ALIKED``).

``precision="bf16"`` runs the backbone's convolutions in bf16; the deformable convolutions (no bf16 kernel on the
CPU), the score head and the sparse descriptor head stay in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from kornia.feature.aliked.aliked import ALIKED as KorniaALIKED
from kornia.feature.aliked.aliked import DeformableConv2d
from torch import nn

from .. import weights
from ..errors import ConfigError
from .base import Extractor

MODELS = ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")
NmsMode = Literal["reference", "strict"]
DIVISOR = 32  # the backbone pads images to multiples of this (replicate padding, centred)
BAND_ROWS = 32  # rows per band of the full-resolution part of the score head (16-32 measured best)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # torch.nn.SELU's constants


def selu_(x: torch.Tensor) -> torch.Tensor:
    """SELU in place, ``scale * (max(x, 0) + alpha * (exp(min(x, 0)) - 1))``: torch's ``selu_`` within 2.4e-7 of
    it (fp32), 3x faster on the CPU (torch's kernel evaluates ``expm1`` element by element; ``exp`` is vectorised).
    SELU was 70% of ALIKED's time at 1024 px."""
    negative = x.clamp(max=0).exp_().sub_(1)
    return x.clamp_(min=0).mul_(SELU_SCALE).add_(negative, alpha=SELU_ALPHA * SELU_SCALE)


def bn_folded(conv: nn.Module, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` followed by ``bn`` in eval mode as one convolution (``conv`` an ``nn.Conv2d``
    or a kornia ``DeformableConv2d``, whose ``regular_conv`` holds its weight)."""
    conv = getattr(conv, "regular_conv", conv)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale[:, None, None, None], bias


def deform_conv(x: torch.Tensor, conv: DeformableConv2d, weight: torch.Tensor, bias: Optional[torch.Tensor],
                ) -> torch.Tensor:
    """kornia's (and torchvision's) deformable convolution without modulation (ALIKED's configurations use
    none), stride 1, on ``(1, C, H, W)``: each
    tap ``(i, j)`` of output pixel ``(y, x)`` reads the input bilinearly at ``(y - p + i + dy, x - p + j + dx)``
    (zeros outside), ``(dy, dx)`` from ``conv.offset_conv`` clamped to a quarter of the long side; then one GEMM
    with ``weight`` ``(C_out, C, k, k)``. fp32; returns ``(1, C_out, H, W)`` channels-last."""
    _, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    pad = conv.padding
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        limit = max(h, w) / 4.0
        offset = conv.offset_conv(x).clamp(-limit, limit)[0].permute(1, 2, 0).reshape(h, w, kh * kw, 2)
        taps_y, taps_x = torch.meshgrid(torch.arange(kh, device=x.device), torch.arange(kw, device=x.device),
                                        indexing="ij")
        ys = (torch.arange(h, device=x.device)[:, None, None] - pad + taps_y.reshape(1, 1, -1)).float()
        xs = (torch.arange(w, device=x.device)[None, :, None] - pad + taps_x.reshape(1, 1, -1)).float()
        rows, cols, weights_ = bilinear_corners((xs + offset[..., 1]).reshape(-1), (ys + offset[..., 0]).reshape(-1))
        weights_ = weights_ * ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))
        table = x[0].permute(1, 2, 0).reshape(h * w, c)
        sampled = F.embedding_bag(rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1), table,
                                  per_sample_weights=weights_, mode="sum")  # (H*W*k*k, C)
        out = F.linear(sampled.view(h * w, kh * kw * c), weight.permute(0, 2, 3, 1).reshape(c_out, -1), bias)
        return out.view(1, h, w, c_out).permute(0, 3, 1, 2)


def conv_bn(x: torch.Tensor, conv: nn.Module, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` in eval mode, the batch norm folded into the convolution."""
    weight, bias = bn_folded(conv, bn)
    if isinstance(conv, DeformableConv2d):
        return deform_conv(x, conv, weight, bias)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


def conv_block(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """kornia's ``ConvBlock`` (two convolutions, each with batch norm and SELU) in eval mode."""
    x = selu_(conv_bn(x, block.conv1, block.bn1))
    return selu_(conv_bn(x, block.conv2, block.bn2))


def res_block(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """kornia's ``ResBlock`` (two convolutions with batch norm, SELU, a 1x1 convolution as shortcut) in eval mode."""
    out = selu_(conv_bn(x, block.conv1, block.bn1))
    out = conv_bn(out, block.conv2, block.bn2)
    return selu_(out.add_(block.downsample(x)))


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the ``(2r+1)^2`` window of each pixel of ``(..., H, W)``, as ``max_pool2d`` with stride 1 and
    padding ``r`` (the same values), computed as maxima of shifted rows, then of shifted columns (vectorised,
    several times faster than ``max_pool2d`` on the CPU)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (radius, radius, 0, 0), value=float("-inf"))
    rows = padded[..., :, :w].clone()
    for k in range(1, 2 * radius + 1):
        torch.maximum(rows, padded[..., :, k:k + w], out=rows)
    padded = F.pad(rows, (0, 0, radius, radius), value=float("-inf"))
    out = padded[..., :h, :].clone()
    for k in range(1, 2 * radius + 1):
        torch.maximum(out, padded[..., k:k + h, :], out=out)
    return out


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The reference's NMS on ``(B, 1, H, W)`` scores: window maxima (ties kept), plus two rounds that add the maxima
    of what remains once the windows of the points kept so far are suppressed. Suppressed scores become 0."""
    zeros = torch.zeros_like(scores)
    keep = scores == window_max(scores, radius)
    for _ in range(2):
        suppressed = window_max(keep.float(), radius) > 0
        remaining = torch.where(suppressed, zeros, scores)
        keep = keep | ((remaining == window_max(remaining, radius)) & ~suppressed)
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


def bilinear_corners(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four pixels around each point ``(x, y)`` ``(M,)`` (pixel units) and their bilinear weights: rows
    ``(M, 4)``, columns ``(M, 4)``, weights ``(M, 4)``, in the order top-left, top-right, bottom-left,
    bottom-right."""
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    rows = torch.stack([y0, y0, y0 + 1, y0 + 1], 1)
    cols = torch.stack([x0, x0 + 1, x0, x0 + 1], 1)
    weights_ = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
    return rows, cols, weights_


def upsampled_at(level: torch.Tensor, size: tuple[int, int], ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Pixels ``(ys, xs)`` of ``level`` ``(1, C, h, w)`` bilinearly upsampled to ``size`` ``(H, W)`` with aligned
    corners (``nn.Upsample(mode="bilinear", align_corners=True)``), without upsampling the rest: ``(M, C)`` fp32."""
    _, c, h, w = level.shape
    table = level[0].float().permute(1, 2, 0).reshape(h * w, c)  # no copy for an fp32 channels-last level

    def source(index: torch.Tensor, n_in: int, n_out: int) -> torch.Tensor:
        scale = torch.tensor(n_in - 1, dtype=torch.float32) / (n_out - 1) if n_out > 1 else torch.tensor(0.0)
        return index.to(torch.float32) * scale

    rows, cols, weights_ = bilinear_corners(source(xs, w, size[1]), source(ys, h, size[0]))
    rows, cols = rows.clamp(max=h - 1), cols.clamp(max=w - 1)  # the last row/column: weight 0 on the next
    return F.embedding_bag(rows * w + cols, table, per_sample_weights=weights_, mode="sum")


@dataclass
class DenseMaps:
    """What the backbone leaves for detection and description of one image.

    The reference's feature map is the concatenation of four gated 32-channel maps (``dim / 4`` channels),
    ``selu(conv1(block1))`` at full resolution and the others upsampled from 1/2, 1/8 and 1/32, L2-normalised per
    pixel; :meth:`features_at` computes it at given pixels only.

    Attributes:
        score_map: ``(1, 1, H, W)`` float32 detection scores in (0, 1), at the image's size.
        full: ``(1, c1, H', W')`` the output of the first block at the padded size, before ``conv1``.
        project: ``conv1``'s weight ``(dim / 4, c1)`` (a 1x1 convolution without bias).
        levels: the other three gated maps, at 1/2, 1/8 and 1/32 of the padded size.
        padding: ``(left, top)`` padding of the image inside the padded maps.
    """

    score_map: torch.Tensor
    full: torch.Tensor
    project: torch.Tensor
    levels: tuple[torch.Tensor, ...]
    padding: tuple[int, int]

    def features_at(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The reference's L2-normalised feature map at integer pixels ``(ys, xs)`` ``(M,)`` of the image (each
        pixel once, in row-major order for locality): ``(M, dim)`` fp32."""
        c, height, width = self.full.shape[1:]
        ys, xs = ys + self.padding[1], xs + self.padding[0]
        full = F.embedding(ys * width + xs, self.full[0].permute(1, 2, 0).reshape(-1, c)).float()
        parts = [selu_(F.linear(full, self.project))]
        parts += [upsampled_at(level, (height, width), ys, xs) for level in self.levels]
        return F.normalize(torch.cat(parts, 1), p=2, dim=1)


class ALIKED(Extractor):
    """ALIKED features. ``max_keypoints`` caps the count (``-1``: no cap); with ``detection_threshold <= 0`` exactly
    ``max_keypoints`` are returned (top-k mode, as LightGlue's benchmark)."""

    descriptor_dim = 128

    def __init__(self, model: str = "aliked-n16", max_keypoints: int = 2048, detection_threshold: float = 0.2,
                 nms_radius: int = 2, nms: NmsMode = "reference", resize: Optional[int] = 1024,
                 weights_path: Optional[str] = None, precision: str = "fp32", upsample: bool = True) -> None:
        super().__init__(resize=resize, precision=precision, upsample=upsample)
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
        state = weights.load_state_dict(model, weights_path)
        state = {f"net.{k}": v for k, v in state.items()}
        weights.load_into(self, state, model, str(weights_path or ""), ignore_missing=("net.dkd.hw_grid",))
        self.eval()

    def budget_settings(self, n: int) -> tuple[dict, bool]:
        return {"max_keypoints": n, "detection_threshold": -1.0}, True

    def detector_settings(self) -> dict:
        return {"max_keypoints": self.max_keypoints, "detection_threshold": self.detection_threshold,
                "nms": self.nms, "nms_radius": self.nms_radius}

    # ------------------------------------------------------------------ dense part
    @torch.inference_mode()
    def dense_maps(self, image: torch.Tensor) -> DenseMaps:
        """Backbone and score head on a ``(1, 3, H, W)`` image (padded inside to multiples of 32); inference only
        (the score head writes into preallocated bands, which autograd cannot follow)."""
        net = self.net
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % DIVISOR, (-w) % DIVISOR
        left, top = pad_w // 2, pad_h // 2
        x = F.pad(image, [left, pad_w - left, top, pad_h - top], mode="replicate")
        x1 = conv_block(x.contiguous(memory_format=torch.channels_last), net.block1)
        x2 = res_block(F.avg_pool2d(x1, 2), net.block2)
        x3 = res_block(F.avg_pool2d(x2, 4), net.block3)
        x4 = res_block(F.avg_pool2d(x3, 4), net.block4)
        levels = tuple(selu_(conv(level)) for conv, level in zip((net.conv2, net.conv3, net.conv4), (x2, x3, x4)))
        project = net.conv1.weight.flatten(1)
        score_map = self.score_map(x1, project, levels)[..., top:top + h, left:left + w].contiguous()
        return DenseMaps(score_map, x1, project, levels, (left, top))

    def score_map(self, full: torch.Tensor, project: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The score head on the reference's concatenated map, in fp32: its first (1x1, linear) convolution on each
        part at the part's own resolution, the 8-channel results upsampled and summed. The full-resolution part
        (``project``, SELU, the head's 1x1 convolution) runs in bands of rows that stay in the cache."""
        head = self.net.score_head
        _, _, height, width = full.shape
        first = head[0].weight.flatten(1).split([project.shape[0]] + [level.shape[1] for level in levels], dim=1)
        with torch.autocast(full.device.type, enabled=False):
            rows = full.permute(0, 2, 3, 1)  # (1, H, W, c1), contiguous for a channels-last map
            x = rows.new_empty((1, height, width, first[0].shape[0]), dtype=torch.float32)
            for r in range(0, height, BAND_ROWS):
                band = selu_(F.linear(rows[:, r:r + BAND_ROWS].float(), project))
                torch.matmul(band, first[0].T, out=x[:, r:r + BAND_ROWS])
            x = x.permute(0, 3, 1, 2)  # (1, 8, H, W) channels-last
            for level, weight in zip(levels, first[1:]):
                x += F.interpolate(F.conv2d(level.float(), weight[:, :, None, None]), size=(height, width),
                                   mode="bilinear", align_corners=True)
            for layer in head[1:]:
                x = selu_(x) if isinstance(layer, nn.SELU) else layer(x)
            return torch.sigmoid(x)

    # ------------------------------------------------------------------ detection
    def detect(self, score_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints ``(N, 2)`` in [-1, 1] and scores ``(N,)`` from a ``(1, 1, H, W)`` score map."""
        if self.nms == "strict":
            dkd = self.net.dkd
            dkd.top_k = -1 if self.detection_threshold > 0 else self.max_keypoints
            dkd.scores_th = self.detection_threshold
            dkd.n_limit = self.max_keypoints if self.max_keypoints > 0 else KorniaALIKED.n_limit_max
            keypoints, scores, _ = dkd(score_map)
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

    # ------------------------------------------------------------------ description
    def describe(self, maps: DenseMaps, keypoints: torch.Tensor) -> torch.Tensor:
        """The SDDH descriptor head at keypoints ``(N, 2)`` in [-1, 1]: L2-normalised ``(N, dim)``, fp32.

        The feature map is needed at the ``ps x ps`` patch around each keypoint (the input of the offset network)
        and at the four neighbours of each of its ``n_pos`` deformable samples: those pixels are computed once each.
        """
        head = self.net.desc_head
        h, w = maps.score_map.shape[-2:]
        n, ps, n_pos = len(keypoints), head.kernel_size, head.n_pos
        wh = torch.tensor([w - 1, h - 1], device=keypoints.device, dtype=torch.float32)
        kpts_wh = (keypoints / 2 + 0.5) * wh
        # the patch: corners placed and clamped as the reference's get_patches
        corner = (kpts_wh.long() - ps / 2 + 1).long()
        corner[:, 0] = corner[:, 0].clamp(min=0, max=w - 1 - ps)
        corner[:, 1] = corner[:, 1].clamp(min=0, max=h - 1 - ps)
        steps = torch.arange(ps, device=keypoints.device)
        patch_pixels = ((corner[:, 1, None, None] + steps[None, :, None]) * w
                        + corner[:, 0, None, None] + steps[None, None, :]).reshape(-1)  # (N * ps * ps,)
        pixels, inverse = torch.unique(patch_pixels, return_inverse=True)
        patches = F.embedding(inverse, maps.features_at(pixels // w, pixels % w)).view(n, ps * ps, -1)
        # the offset network: two convolutions with one output pixel per patch, i.e. two linear layers
        conv_a, conv_b = head.offset_conv[0], head.offset_conv[2]
        hidden = F.linear(patches.transpose(1, 2).reshape(n, -1), conv_a.weight.flatten(1), conv_a.bias)
        offset = F.linear(selu_(hidden), conv_b.weight.flatten(1), conv_b.bias)
        max_offset = max(h, w) / 4.0
        offset = offset.clamp(-max_offset, max_offset).view(n, 2, n_pos).permute(0, 2, 1)
        # grid_sample(feature map, pos, align_corners=True, zeros outside), from the reference's normalised grid
        pos = (2.0 * (kpts_wh[:, None] + offset) / wh - 1).reshape(-1, 2)
        rows, cols, weights_ = bilinear_corners((pos[:, 0] + 1) * ((w - 1) / 2), (pos[:, 1] + 1) * ((h - 1) / 2))
        weights_ = weights_ * ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))
        pixels, inverse = torch.unique(rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1), return_inverse=True)
        features = F.embedding_bag(inverse, maps.features_at(pixels // w, pixels % w), per_sample_weights=weights_,
                                   mode="sum").view(n, n_pos, -1)
        features = selu_(F.linear(features, head.sf_conv.weight.flatten(1)))
        descriptors = features.reshape(n, -1) @ head.agg_weights.reshape(-1, head.agg_weights.shape[-1])
        return F.normalize(descriptors, p=2.0, dim=1)

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = self.dense_maps(image[None])
        keypoints, scores = self.detect(maps.score_map)
        if len(keypoints) == 0:
            return keypoints, scores, keypoints.new_zeros((0, self.descriptor_dim))
        with torch.autocast(image.device.type, enabled=False):
            descriptors = self.describe(maps, keypoints)
        h, w = image.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], device=image.device, dtype=keypoints.dtype)
        return wh * (keypoints + 1) / 2.0, scores, descriptors
