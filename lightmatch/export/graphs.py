"""Our models rewritten in operations that export to ONNX with dynamic sizes, computing what the torch models
compute (the parity tests hold them to it).

Extractors become one graph from the network image ``(1, C, H, W)`` in [0, 1] and the keypoint settings
(``max_keypoints`` int64, ``detection_threshold`` float32, scalars) to keypoints ``(N, 2)`` in the network image's
pixels, scores ``(N,)`` and descriptors ``(N, D)``. The settings are inputs, so one export serves every budget.

LightGlue becomes small graphs that a loop drives (:mod:`lightmatch.runtime.onnx_runner`), so that adaptive depth
and width survive: ``encode`` (input projection and the rotary factors of normalised positions), one ``layer_i``
per transformer layer (both images' tokens in, the tokens after the layer out, with the per-point confidence and
matchability that decide early exit and pruning), its twin ``batch_layer_i`` on a padded, masked batch of pairs
(a dynamic batch axis), and one ``assign_i`` per layer (the row and column maxima of the assignment at a stopping
layer). :class:`ColmapLightGlue` chains them all into COLMAP's one fixed-depth graph.

Tracing bakes Python numbers into the graph, so every size that depends on the input is computed from tensor
shapes with tensor operations here (``torch._shape_as_tensor``), never with ``int``/``max`` of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.feature.aliked.aliked import DeformableConv2d
from torch import nn
from torchvision.ops import deform_conv2d

from ..models.aliked import ALIKED, DIVISOR
from ..models.disk import DISK, PAD_MULTIPLE
from ..models.lightglue import LightGlue, TransformerLayer, apply_rotary
from ..models.superpoint import SuperPoint, simple_nms
from ..models.xfeat import XFeat


def _size(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.shape[dim]`` as a traced int64 scalar."""
    return torch._shape_as_tensor(x)[dim]


class ExtractorGraph(nn.Module):
    """An extractor's graph; :meth:`inputs` turns the extractor's settings (the attributes :attr:`SOURCES`) into
    the graph's ``max_keypoints`` and ``detection_threshold`` inputs."""

    SOURCES: tuple[str, ...] = ("max_keypoints", "detection_threshold")

    @staticmethod
    def inputs(model) -> tuple[int, float]:
        """``(max_keypoints, detection_threshold)`` for an extractor (or its ONNX twin) holding :attr:`SOURCES`."""
        return int(model.max_keypoints) if model.max_keypoints else -1, float(model.detection_threshold)


# ---------------------------------------------------------------------------------------------------- detection
def select_detections(nms_scores: torch.Tensor, scores: torch.Tensor, max_keypoints: torch.Tensor,
                      threshold: torch.Tensor, limit_max: int) -> torch.Tensor:
    """:func:`lightmatch.models.aliked.select_indices` as graph operations: flat indices into ``(H, W)`` maps.

    Top-k mode (``threshold <= 0`` and ``max_keypoints > 0``): the ``max_keypoints`` highest NMS scores, highest
    first. Otherwise the scores above ``threshold`` (above the mean score when none passes or ``threshold <= 0``),
    in row-major order, or the ``limit`` highest (highest first) when there are more.
    """
    flat = nms_scores.reshape(-1)
    top_k_mode = (threshold <= 0) & (max_keypoints > 0)
    above = flat > threshold
    use_threshold = (threshold > 0) & above.any()
    mask = (use_threshold & above) | (~use_threshold & (flat > scores.mean()))  # (ONNX Runtime: no bool Where)
    mask = mask | top_k_mode  # top-k: every pixel is a candidate
    indices = mask.nonzero()[:, 0]
    count = _size(indices, 0)
    limit = torch.where(max_keypoints > 0, max_keypoints, torch.full_like(max_keypoints, limit_max))
    k = torch.minimum(count, limit)
    chosen = indices[torch.topk(flat[indices], k).indices]
    row_major = chosen.sort().values
    return torch.where(top_k_mode | (count > limit), chosen, row_major)


def border_mask(height: torch.Tensor, width: torch.Tensor, border: int) -> torch.Tensor:
    """``(H, W)`` bool, False within ``border`` pixels of the edge."""
    ys = torch.arange(height)
    xs = torch.arange(width)
    rows = (ys >= border) & (ys < height - border)
    cols = (xs >= border) & (xs < width - border)
    return rows[:, None] & cols[None, :]


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a ``(R, C)`` table and any index shape (one Gather)."""
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, table.shape[-1])


def bilinear_corners(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`lightmatch.models.aliked.bilinear_corners`."""
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    rows = torch.stack([y0, y0, y0 + 1, y0 + 1], 1)
    cols = torch.stack([x0, x0 + 1, x0, x0 + 1], 1)
    weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
    return rows, cols, weights


# ---------------------------------------------------------------------------------------------------- ALIKED
def export_conv(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``conv(x)``; a kornia ``DeformableConv2d`` (no modulation) as torchvision's ``deform_conv2d`` (ONNX
    ``DeformConv``), its offsets clamped to a quarter of the long side as ours."""
    if not isinstance(conv, DeformableConv2d):
        return conv(x)
    if torch.jit.is_tracing():  # TorchScript tracing: from the traced shape (a Python max would be baked in)
        limit = torch.maximum(_size(x, 2), _size(x, 3)).float() / 4.0
        offset = torch.clamp(conv.offset_conv(x), -limit, limit)
    else:  # eager, or torch.export (scripts/bench_runtimes.py's dynamo export), where shapes are symbolic
        limit = max(x.shape[-2:]) / 4.0
        offset = conv.offset_conv(x).clamp(-limit, limit)
    regular = conv.regular_conv
    return deform_conv2d(x, offset, regular.weight, regular.bias, stride=conv.stride, padding=conv.padding,
                         dilation=conv.dilation)


def conv_block(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """kornia's ``ConvBlock`` in eval mode, in exportable operations."""
    x = torch.selu(block.bn1(export_conv(x, block.conv1)))
    return torch.selu(block.bn2(export_conv(x, block.conv2)))


def res_block(x: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """kornia's ``ResBlock`` in eval mode, in exportable operations."""
    out = torch.selu(block.bn1(export_conv(x, block.conv1)))
    out = block.bn2(export_conv(out, block.conv2))
    return torch.selu(out + block.downsample(x))


class AlikedGraph(ExtractorGraph):
    """:meth:`ALIKED.detect_and_describe` (reference NMS) as one graph: with ``detection_threshold <= 0`` and
    ``max_keypoints > 0`` exactly the ``max_keypoints`` best (top-k); otherwise the scores above the threshold (or
    the mean) in row-major order, the best (best first) when there are more than ``max_keypoints``."""

    def __init__(self, extractor: ALIKED) -> None:
        super().__init__()
        self.net = extractor.net
        self.radius = extractor.nms_radius
        from kornia.feature.aliked.aliked import ALIKED as KorniaALIKED
        self.limit_max = KorniaALIKED.n_limit_max

    def forward(self, image: torch.Tensor, max_keypoints: torch.Tensor, detection_threshold: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.net
        h, w = _size(image, 2), _size(image, 3)
        pad_h, pad_w = (DIVISOR - h % DIVISOR) % DIVISOR, (DIVISOR - w % DIVISOR) % DIVISOR
        left, top = pad_w // 2, pad_h // 2
        x = F.pad(image, [left, pad_w - left, top, pad_h - top], mode="replicate")
        x1 = conv_block(x, net.block1)
        x2 = res_block(F.avg_pool2d(x1, 2), net.block2)
        x3 = res_block(F.avg_pool2d(x2, 4), net.block3)
        x4 = res_block(F.avg_pool2d(x3, 4), net.block4)
        levels = [torch.selu(conv(level)) for conv, level in zip((net.conv2, net.conv3, net.conv4), (x2, x3, x4))]
        project = net.conv1.weight.flatten(1)
        head = net.score_head
        parts = head[0].weight.flatten(1).split([project.shape[0]] + [lv.shape[1] for lv in levels], dim=1)
        full_c = x1.permute(0, 2, 3, 1)  # (1, H', W', c1)
        score = torch.matmul(torch.selu(torch.matmul(full_c, project.T)), parts[0].T).permute(0, 3, 1, 2)
        size = x1.shape[-2:]
        for level, weight in zip(levels, parts[1:]):
            score = score + F.interpolate(F.conv2d(level, weight[:, :, None, None]), size=size, mode="bilinear",
                                          align_corners=True)
        for layer in head[1:]:
            score = layer(score)
        score_map = torch.sigmoid(score)[0, 0, top:top + h, left:left + w]  # (H, W)

        r = self.radius
        nms = simple_nms(score_map[None, None], r)[0, 0] * border_mask(h, w, r)
        indices = select_detections(nms, score_map, max_keypoints, detection_threshold, self.limit_max)
        keypoints, scores = self.refine(score_map, indices, h, w)
        descriptors = self.describe(x1, project, levels, (left, top), keypoints, h, w)
        wh = torch.stack([w - 1, h - 1]).float()
        return wh * (keypoints + 1) / 2.0, scores, descriptors

    def refine(self, score_map: torch.Tensor, indices: torch.Tensor, h: torch.Tensor, w: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`lightmatch.models.aliked.refine_subpixel`: keypoints in [-1, 1] and their bilinear scores."""
        r, temperature = self.radius, 0.1
        k = 2 * r + 1
        axis = torch.linspace(-r, r, k)
        grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
        grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1)
        offsets = torch.arange(-r, r + 1)
        padded = F.pad(score_map[None, None], (r, r, r, r))[0, 0]
        ys, xs = torch.div(indices, w, rounding_mode="trunc"), indices % w
        rows = (ys[:, None] + offsets[None] + r)[:, :, None]
        cols = (xs[:, None] + offsets[None] + r)[:, None, :]
        patches = padded.reshape(-1)[(rows * (w + 2 * r) + cols).reshape(-1)].reshape(-1, k * k)
        weights = ((patches - patches.max(dim=1, keepdim=True).values) / temperature).exp()
        residual = weights @ grid / weights.sum(dim=1)[:, None]
        xy = torch.stack([xs, ys], 1) + residual
        wh = torch.stack([w - 1, h - 1]).float()
        xy = xy / wh * 2 - 1
        kpt_scores = F.grid_sample(score_map[None, None], xy.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
        return xy, kpt_scores[0, 0, 0]

    def features_at(self, full: torch.Tensor, project: torch.Tensor, levels: list[torch.Tensor],
                    ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """:meth:`lightmatch.models.aliked.DenseMaps.features_at` at padded-map pixels ``(ys, xs)`` ``(M,)``."""
        c, height, width = full.shape[1], _size(full, 2), _size(full, 3)
        table = full[0].reshape(c, -1).T
        parts = [torch.selu(F.linear(gather_rows(table, ys * width + xs), project))]
        for level in levels:
            lc, lh, lw = level.shape[1], _size(level, 2), _size(level, 3)
            sy = (lh - 1).float() / (height - 1).float()
            sx = (lw - 1).float() / (width - 1).float()
            rows, cols, weights = bilinear_corners(xs.float() * sx, ys.float() * sy)
            rows, cols = torch.minimum(rows, lh - 1), torch.minimum(cols, lw - 1)
            corners = gather_rows(level[0].reshape(lc, -1).T, rows * lw + cols)  # (M, 4, C)
            parts.append((corners * weights[..., None]).sum(1))
        return F.normalize(torch.cat(parts, 1), p=2, dim=1)

    def describe(self, full: torch.Tensor, project: torch.Tensor, levels: list[torch.Tensor],
                 padding: tuple[torch.Tensor, torch.Tensor], keypoints: torch.Tensor, h: torch.Tensor,
                 w: torch.Tensor) -> torch.Tensor:
        """:meth:`ALIKED.describe`, computing the feature map at every needed pixel (repeats included)."""
        head = self.net.desc_head
        left, top = padding
        ps, n_pos = head.kernel_size, head.n_pos
        n = _size(keypoints, 0)
        wh = torch.stack([w - 1, h - 1]).float()
        kpts_wh = (keypoints / 2 + 0.5) * wh
        corner = (kpts_wh.long() - ps / 2 + 1).long()
        cx = torch.minimum(torch.clamp(corner[:, 0], min=0), w - 1 - ps)
        cy = torch.minimum(torch.clamp(corner[:, 1], min=0), h - 1 - ps)
        steps = torch.arange(ps)
        pys = (cy[:, None, None] + steps[None, :, None]).expand(-1, ps, ps).reshape(-1)
        pxs = (cx[:, None, None] + steps[None, None, :]).expand(-1, ps, ps).reshape(-1)
        patches = self.features_at(full, project, levels, pys + top, pxs + left).reshape(n, ps * ps, -1)
        conv_a, conv_b = head.offset_conv[0], head.offset_conv[2]
        hidden = F.linear(patches.transpose(1, 2).reshape(n, -1), conv_a.weight.flatten(1), conv_a.bias)
        offset = F.linear(torch.selu(hidden), conv_b.weight.flatten(1), conv_b.bias)
        max_offset = torch.maximum(h, w).float() / 4.0
        offset = torch.clamp(offset, -max_offset, max_offset).reshape(n, 2, n_pos).permute(0, 2, 1)
        pos = (2.0 * (kpts_wh[:, None] + offset) / wh - 1).reshape(-1, 2)
        rows, cols, weights = bilinear_corners((pos[:, 0] + 1) * ((w - 1).float() / 2),
                                               (pos[:, 1] + 1) * ((h - 1).float() / 2))
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        weights = weights * inside
        rows = torch.minimum(torch.clamp(rows, min=0), h - 1)
        cols = torch.minimum(torch.clamp(cols, min=0), w - 1)
        corners = self.features_at(full, project, levels, rows.reshape(-1) + top, cols.reshape(-1) + left)
        features = (corners.reshape(-1, 4, corners.shape[-1]) * weights[..., None]).sum(1).reshape(n, n_pos, -1)
        features = torch.selu(F.linear(features, head.sf_conv.weight.flatten(1)))
        descriptors = features.reshape(n, -1) @ head.agg_weights.reshape(-1, head.agg_weights.shape[-1])
        return F.normalize(descriptors, p=2.0, dim=1)


# ---------------------------------------------------------------------------------------------------- DISK
def strict_maxima(x: torch.Tensor, window: int) -> torch.Tensor:
    """kornia's ``nms2d(mask_only=True)`` for an odd ``window`` on an ``(H, W)`` map: True where a value is greater
    than every other in its window; never within ``window // 2`` of the edge."""
    r = window // 2
    h, w = _size(x, 0), _size(x, 1)
    padded = F.pad(x[None, None], (r, r, r, r), value=float("-inf"))[0, 0]
    keep = border_mask(h, w, r)
    for dy in range(window):
        for dx in range(window):
            if (dy, dx) != (r, r):
                keep = keep & (x > padded[dy:dy + h, dx:dx + w])
    return keep


class DiskGraph(ExtractorGraph):
    """:meth:`DISK.detect_and_describe` in fp32 (kornia's U-Net on the image zero-padded at the bottom and right,
    ``heatmap_to_keypoints``: strict maxima above the threshold in raster order, the ``max_keypoints`` strongest when
    there are more, ties taken in raster order) as one graph."""

    def __init__(self, extractor: DISK) -> None:
        super().__init__()
        if extractor.nms_window % 2 == 0:
            raise ValueError("DISK exports with an odd NMS window only")
        self.net = extractor.net
        self.window = extractor.nms_window

    def forward(self, image: torch.Tensor, max_keypoints: torch.Tensor, detection_threshold: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = _size(image, 2), _size(image, 3)
        pad_h = (PAD_MULTIPLE - h % PAD_MULTIPLE) % PAD_MULTIPLE
        pad_w = (PAD_MULTIPLE - w % PAD_MULTIPLE) % PAD_MULTIPLE
        out = self.net.unet(F.pad(image, [0, pad_w, 0, pad_h]))
        dim = self.net.desc_dim
        heatmap = out[0, dim, :h, :w]
        mask = strict_maxima(heatmap, self.window) & (heatmap > detection_threshold)
        flat = heatmap.reshape(-1)
        indices = mask.reshape(-1).nonzero()[:, 0]
        count = _size(indices, 0)
        k = torch.where(max_keypoints > 0, torch.minimum(max_keypoints, count), count)
        indices = indices[torch.topk(flat[indices], k).indices].sort().values  # ONNX TopK: ties, lower index first
        ys, xs = torch.div(indices, w, rounding_mode="trunc"), indices % w
        table = out[0, :dim].reshape(dim, -1).T
        descriptors = F.normalize(gather_rows(table, ys * _size(out, 3) + xs), dim=-1)
        return torch.stack([xs, ys], 1).float(), flat[indices], descriptors


# ---------------------------------------------------------------------------------------------------- SuperPoint
def cells_to_map(cells: torch.Tensor, h8: torch.Tensor, w8: torch.Tensor) -> torch.Tensor:
    """``(64, h, w)`` per-cell scores (channel ``8 dy + dx`` of cell ``(y, x)``) -> the ``(8h, 8w)`` pixel map, as
    SuperPoint's and XFeat's heads lay them out."""
    return cells.reshape(8, 8, h8, w8).permute(2, 0, 3, 1).reshape(h8 * 8, w8 * 8)


class SuperPointGraph(ExtractorGraph):
    """:meth:`SuperPoint.detect_and_describe` as one graph: the network, NMS, keypoints off the border above
    ``detection_threshold`` (every pixel when it is negative) in row-major order, the ``max_keypoints`` best (best
    first) when there are more and ``max_keypoints > 0``, descriptors sampled bilinearly from the coarse map."""

    SOURCES = ("max_keypoints", "keypoint_threshold", "exact_keypoints")

    @staticmethod
    def inputs(model) -> tuple[int, float]:
        """``exact_keypoints``: that many, threshold off; otherwise the cap and the threshold (< 0: none)."""
        if model.exact_keypoints is not None:
            return int(model.exact_keypoints), -1.0
        return int(model.max_keypoints), float(model.keypoint_threshold)

    def __init__(self, extractor: SuperPoint) -> None:
        super().__init__()
        self.net = extractor
        self.radius, self.border = extractor.nms_radius, extractor.remove_borders

    def forward(self, image: torch.Tensor, max_keypoints: torch.Tensor, detection_threshold: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.net
        x = image
        for a, b in ((net.conv1a, net.conv1b), (net.conv2a, net.conv2b), (net.conv3a, net.conv3b)):
            x = net.pool(torch.relu(b(torch.relu(a(x)))))
        x = torch.relu(net.conv4b(torch.relu(net.conv4a(x))))
        h8, w8 = _size(x, 2), _size(x, 3)
        cells = net.convPb(torch.relu(net.convPa(x))).softmax(1)[0, :-1]  # (64, h8, w8)
        scores = cells_to_map(cells, h8, w8)
        dense = F.normalize(net.convDb(torch.relu(net.convDa(x))), p=2, dim=1)
        h, w = _size(scores, 0), _size(scores, 1)
        nms = simple_nms(scores[None, None], self.radius)[0, 0]
        flat = nms.reshape(-1)
        mask = border_mask(h, w, self.border) & ((detection_threshold < 0) | (nms > detection_threshold))
        indices = mask.reshape(-1).nonzero()[:, 0]
        count = _size(indices, 0)
        k = torch.where(max_keypoints > 0, torch.minimum(max_keypoints, count), count)
        chosen = indices[torch.topk(flat[indices], k).indices]
        indices = torch.where((max_keypoints > 0) & (count > max_keypoints), chosen, chosen.sort().values)
        keypoints = torch.stack([indices % w, torch.div(indices, w, rounding_mode="trunc")], 1).float()
        s = 8
        size = torch.stack([w8 * s, h8 * s]).float() - s / 2 - 0.5
        grid = ((keypoints - s / 2 + 0.5) / size) * 2 - 1
        desc = F.grid_sample(dense, grid.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
        descriptors = F.normalize(desc.reshape(dense.shape[1], -1), p=2, dim=0).T
        return keypoints, flat[indices], descriptors


# ---------------------------------------------------------------------------------------------------- XFeat
class XFeatGraph(ExtractorGraph):
    """kornia's ``XFeat.detectAndCompute`` as one graph: the image resized to multiples of 32 (bilinear), the
    network, the strict 5x5 maxima of the keypoint heatmap above ``detection_threshold``, the ``max_keypoints`` best
    by heatmap value times reliability (best first; all when ``max_keypoints <= 0``), descriptors sampled bicubically,
    keypoints scaled back to the input image."""

    def __init__(self, extractor: XFeat) -> None:
        super().__init__()
        self.net = extractor.net.net

    def forward(self, image: torch.Tensor, max_keypoints: torch.Tensor, detection_threshold: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self.net
        h, w = _size(image, 2), _size(image, 3)
        rh = torch.clamp(torch.div(h, 32, rounding_mode="floor") * 32, min=32)
        rw = torch.clamp(torch.div(w, 32, rounding_mode="floor") * 32, min=32)
        x = F.interpolate(image, size=(rh, rw), mode="bilinear", align_corners=False)
        x = net.norm(x.mean(dim=1, keepdim=True))
        x3 = net.block3(net.block2(net.block1(x) + net.skip1(x)))
        x4 = net.block4(x3)
        x5 = net.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = net.block_fusion(x3 + x4 + x5)
        reliability = net.heatmap_head(feats)
        h8, w8 = torch.div(rh, 8, rounding_mode="floor"), torch.div(rw, 8, rounding_mode="floor")
        cells = x.reshape(1, 1, h8, 8, w8, 8).permute(0, 1, 3, 5, 2, 4).reshape(1, 64, h8, w8)  # XFeat's unfold
        heatmap = cells_to_map(net.keypoint_head(cells).softmax(1)[0, :64], h8, w8)
        mask = strict_maxima(heatmap, 5) & (heatmap > detection_threshold)
        indices = mask.reshape(-1).nonzero()[:, 0]
        pos = torch.stack([indices % rw, torch.div(indices, rw, rounding_mode="trunc")], 1).float()
        grid = (2.0 * pos / torch.stack([rw - 1, rh - 1]).float() - 1.0).view(1, 1, -1, 2)

        def sample(dense: torch.Tensor, mode: str) -> torch.Tensor:  # kornia's InterpolateSparse2d: (N, C)
            return F.grid_sample(dense, grid, mode=mode, align_corners=False)[0, :, 0].T

        scores = (sample(heatmap[None, None], "nearest") * sample(reliability, "bilinear"))[:, 0]
        count = _size(indices, 0)
        k = torch.where(max_keypoints > 0, torch.minimum(max_keypoints, count), count)
        best = torch.topk(scores, k).indices
        best = best[scores[best] > 0]
        descriptors = F.normalize(sample(F.normalize(feats, dim=1), "bicubic"), dim=-1)[best]
        scale = torch.stack([w.float() / rw.float(), h.float() / rh.float()])
        return pos[best] * scale, scores[best], descriptors


# ---------------------------------------------------------------------------------------------------- LightGlue
class EncodeGraph(nn.Module):
    """Input projection of ``(T, D_in)`` descriptors and the rotary factors ``(T, dh)`` of ``(T, P)`` normalised
    positions (one image, or both stacked)."""

    def __init__(self, matcher: LightGlue) -> None:
        super().__init__()
        self.input_proj, self.posenc = matcher.input_proj, matcher.posenc

    def forward(self, descriptors: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # :func:`~lightmatch.models.lightglue.rotary_factors`, its flatten written as a reshape (the tracer exports
        # that flatten of a dynamic size wrongly)
        angles = self.posenc.Wr(positions)
        cos, sin = torch.cos(angles), torch.sin(angles)
        t = _size(angles, 0)
        cos = torch.stack([cos, cos], -1).reshape(t, -1)
        sin = torch.stack([-sin, sin], -1).reshape(t, -1)
        return self.input_proj(descriptors), cos, sin


def _self_attention(block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:meth:`SelfBlock.forward` on one image's tokens ``(T, D)``."""
    t, d = _size(x, 0), x.shape[1]
    qkv = F.linear(x, block.Wqkv.weight[block.qkv_order], block.Wqkv.bias[block.qkv_order])
    qkv = qkv.reshape(t, 3, block.num_heads, block.head_dim).permute(1, 2, 0, 3)
    q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]
    attn = torch.matmul(q * block.head_dim ** -0.5, k.transpose(-1, -2)).softmax(-1)
    message = block.out_proj(torch.matmul(attn, v).transpose(0, 1).reshape(t, d))
    return x + block.ffn(torch.cat([x, message], -1))


def _cross_attention(block, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`CrossBlock.forward` (the CPU's exact product, both sides scaled) on the two images' tokens."""
    d = x0.shape[1]

    def heads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = _size(x, 0)
        qk = block.to_qk(x).reshape(t, block.heads, block.head_dim).transpose(0, 1)
        v = block.to_v(x).reshape(t, block.heads, block.head_dim).transpose(0, 1)
        return qk * block.head_dim ** -0.25, v

    (qk0, v0), (qk1, v1) = heads(x0), heads(x1)
    m0 = torch.matmul(torch.matmul(qk0, qk1.transpose(-1, -2)).softmax(-1), v1)
    m1 = torch.matmul(torch.matmul(qk1, qk0.transpose(-1, -2)).softmax(-1), v0)
    out = []
    for x, m in ((x0, m0), (x1, m1)):
        message = block.to_out(m.transpose(0, 1).reshape(_size(x, 0), d))
        out.append(x + block.ffn(torch.cat([x, message], -1)))
    return out[0], out[1]


class LayerGraph(nn.Module):
    """Transformer layer ``i`` on ``x0`` ``(M, D)``, ``x1`` ``(N, D)`` with their rotary factors; also returns each
    point's confidence and matchability after the layer (zeros for the last layer, which has no confidence)."""

    def __init__(self, matcher: LightGlue, index: int) -> None:
        super().__init__()
        self.layer: TransformerLayer = matcher.transformers[index]
        self.assignment = matcher.log_assignment[index]
        last = index == len(matcher.transformers) - 1
        self.confidence = None if last else matcher.token_confidence[index]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, cos0: torch.Tensor, sin0: torch.Tensor,
                cos1: torch.Tensor, sin1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x0 = _self_attention(self.layer.self_attn, x0, cos0, sin0)
        x1 = _self_attention(self.layer.self_attn, x1, cos1, sin1)
        x0, x1 = _cross_attention(self.layer.cross_attn, x0, x1)
        if self.confidence is None:
            zeros0, zeros1 = x0[:, 0] * 0, x1[:, 0] * 0
            return x0, x1, zeros0, zeros1, zeros0, zeros1
        return (x0, x1, self.confidence(x0), self.confidence(x1), self.assignment.get_matchability(x0),
                self.assignment.get_matchability(x1))


def _self_attention_batch(block, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                          ) -> torch.Tensor:
    """:meth:`SelfBlock.forward_batch` on padded images ``(B', L, D)``, ``mask`` ``(B', L)`` (padding not attended
    to)."""
    b, t, d = _size(x, 0), _size(x, 1), x.shape[2]
    qkv = F.linear(x, block.Wqkv.weight[block.qkv_order], block.Wqkv.bias[block.qkv_order])
    qkv = qkv.reshape(b, t, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4)
    q, k = apply_rotary(qkv[0], cos[:, None], sin[:, None]), apply_rotary(qkv[1], cos[:, None], sin[:, None])
    sim = torch.matmul(q * block.head_dim ** -0.5, k.transpose(-1, -2))
    attn = sim.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    message = block.out_proj(torch.matmul(attn, qkv[2]).transpose(1, 2).reshape(b, t, d))
    return x + block.ffn(torch.cat([x, message], -1))


def _cross_attention_batch(block, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:meth:`CrossBlock.forward_batch` (the CPU's exact product, both sides scaled) on padded pairs
    ``(B, 2, L, D)``, ``mask`` ``(B, 2, L)``."""
    b, t, d = _size(x, 0), _size(x, 2), x.shape[3]
    qk = block.to_qk(x).reshape(b, 2, t, block.heads, block.head_dim).transpose(2, 3) * block.head_dim ** -0.25
    v = block.to_v(x).reshape(b, 2, t, block.heads, block.head_dim).transpose(2, 3)  # (B, 2, H, L, dh)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        sim = torch.matmul(q, k.transpose(-1, -2)).masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return torch.matmul(sim.softmax(-1), v)

    m0 = attend(qk[:, 0], qk[:, 1], v[:, 1], mask[:, 1])
    m1 = attend(qk[:, 1], qk[:, 0], v[:, 0], mask[:, 0])
    message = block.to_out(torch.stack([m0, m1], 1).transpose(2, 3).reshape(b, 2, t, d))
    return x + block.ffn(torch.cat([x, message], -1))


class BatchLayerGraph(LayerGraph):
    """Transformer layer ``i`` on a padded, masked batch of pairs (:meth:`TransformerLayer.forward_batch`): ``x``
    ``(B, 2, L, D)``, ``mask`` ``(B, 2, L)`` bool (True for real points), ``cos``, ``sin`` ``(B, 2, L, dh)``; returns
    the tokens, the confidence and the matchability ``(B, 2, L)`` (zeros for the last layer). Padded tokens are
    never attended to; their outputs are meaningless."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        b, t, d = _size(x, 0), _size(x, 2), x.shape[3]
        mask = mask | ~mask.any(-1, keepdim=True)  # :func:`~lightmatch.models.lightglue.attendable`
        x = _self_attention_batch(self.layer.self_attn, x.reshape(2 * b, t, d), mask.reshape(2 * b, t),
                                  cos.flatten(0, 1), sin.flatten(0, 1)).reshape(b, 2, t, d)
        x = _cross_attention_batch(self.layer.cross_attn, x, mask)
        if self.confidence is None:
            zeros = x[..., 0] * 0
            return x, zeros, zeros
        return x, self.confidence(x), self.assignment.get_matchability(x)


class AssignGraph(nn.Module):
    """The assignment of layer ``i`` (:meth:`MatchAssignment.log_scores`), reduced to what
    :func:`~lightmatch.models.lightglue.filter_matches` reads: each row's maximum log-probability and its column,
    and each column's best row."""

    def __init__(self, matcher: LightGlue, index: int) -> None:
        super().__init__()
        self.assignment = matcher.log_assignment[index]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = log_scores(self.assignment, x0, x1)
        best0 = scores.max(1)
        return best0.values, best0.indices, scores.argmax(0)


def log_scores(assignment: nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``(M, N)`` pair log-probabilities of :meth:`MatchAssignment.log_scores` from the two images' tokens."""
    md0, md1 = assignment.final_proj(x0), assignment.final_proj(x1)
    scale = md0.shape[-1] ** 0.25
    sim = (md0 / scale) @ (md1 / scale).transpose(0, 1)
    z0, z1 = assignment.matchability(x0)[:, 0], assignment.matchability(x1)[:, 0]
    return sim.log_softmax(1) + sim.log_softmax(0) + F.logsigmoid(z0)[:, None] + F.logsigmoid(z1)[None]


class ColmapLightGlue(nn.Module):
    """Every layer of LightGlue in one graph with COLMAP 4's signature: ``kpts0``, ``kpts1`` ``(1, N, 2)`` pixels,
    ``desc0``, ``desc1`` ``(1, N, D)``, ``image_size0``, ``image_size1`` ``(1, 2)`` (w, h) -> ``matches0`` ``(N,)``
    (index into image 1 or -1) and ``mscores0`` ``(N,)``. Fixed depth (a single graph has no early exit)."""

    def __init__(self, matcher: LightGlue) -> None:
        super().__init__()
        if matcher.variant.add_scale_ori:
            raise ValueError("the COLMAP layout has no inputs for scales and orientations (SIFT's LightGlue)")
        self.encode = EncodeGraph(matcher)
        self.layers = nn.ModuleList([LayerGraph(matcher, i) for i in range(len(matcher.transformers))])
        self.assignment = matcher.log_assignment[-1]
        self.threshold = matcher.filter_threshold

    def forward(self, kpts0: torch.Tensor, kpts1: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor,
                image_size0: torch.Tensor, image_size1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def normalise(k: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
            size = size.float()
            return (k[0] - size / 2) / (size.max() / 2)

        x0, cos0, sin0 = self.encode(desc0[0], normalise(kpts0, image_size0))
        x1, cos1, sin1 = self.encode(desc1[0], normalise(kpts1, image_size1))
        for layer in self.layers:
            x0, x1 = layer(x0, x1, cos0, sin0, cos1, sin1)[:2]
        scores = log_scores(self.assignment, x0, x1)
        best0, best1 = scores.max(1), scores.max(0)
        m0, m1 = best0.indices, best1.indices
        mutual0 = torch.arange(_size(m0, 0)) == m1[m0]
        mscores0 = torch.where(mutual0, best0.values.exp(), torch.zeros_like(best0.values))
        valid0 = mutual0 & (mscores0 > self.threshold)
        return torch.where(valid0, m0, torch.full_like(m0, -1)), mscores0
