"""``lightmatch export onnx``: our extractor and matcher as ONNX graphs plus the JSON a runner needs.

Graphs are traced with torch's TorchScript exporter (``dynamo=False``) at opset :data:`OPSET`: our graphs select a
data-dependent number of keypoints (``NonZero``, ``TopK`` with a computed ``k``), which tracing records as it runs,
while the dynamo exporter needs every data-dependent size declared. ALIKED's deformable convolutions become ONNX
``DeformConv`` (opset 19). See :mod:`lightmatch.export.graphs` for what each graph computes and
:mod:`lightmatch.runtime.onnx_runner` for how they are run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from ..io.atomic import atomic_output
from ..models.base import Extractor, Matcher
from ..runtime.onnx_runner import FORMAT, FORMAT_VERSION, MANIFEST

OPSET = 19
LAYOUTS = ("lightmatch", "colmap")
PRECISIONS = ("fp32", "fp16")
EXTRACTOR_FILE = "extractor.onnx"


def _deform_conv(g, x, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                 offset_groups, use_mask):
    """torchvision's ``deform_conv2d`` as ONNX ``DeformConv`` (opset 19; the same (dy, dx) offset layout)."""
    from torch.onnx import symbolic_helper as sh

    def const(v, name):
        return sh._get_const(v, "i", name)

    inputs = [x, weight, offset, bias] + ([mask] if const(use_mask, "use_mask") else [])
    ph, pw = const(pad_h, "pad_h"), const(pad_w, "pad_w")
    return g.op("DeformConv", *inputs, strides_i=[const(stride_h, "stride_h"), const(stride_w, "stride_w")],
                pads_i=[ph, pw, ph, pw], dilations_i=[const(dil_h, "dil_h"), const(dil_w, "dil_w")],
                group_i=const(groups, "groups"), offset_group_i=const(offset_groups, "offset_groups"))


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    import torchvision  # noqa: F401  (registers the torchvision:: operators the tracer meets)

    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv, OPSET)
    with warnings.catch_warnings(), torch.no_grad():  # the tracer's notes on Python values are ours to check
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)


def refuse_extractor(extractor: Extractor) -> Optional[str]:
    """Why ``extractor`` cannot be exported, or None."""
    from ..models.aliked import ALIKED
    from ..models.disk import DISK
    from ..models.superpoint import SuperPoint
    from ..models.xfeat import XFeat

    if isinstance(extractor, ALIKED):
        if extractor.nms != "reference":
            return "ALIKED exports with the reference NMS only (--aliked-nms reference)"
        return None
    if isinstance(extractor, DISK):
        if extractor.nms_window % 2 == 0:
            return "DISK exports with an odd NMS window only"
        return None
    if isinstance(extractor, (SuperPoint, XFeat)):
        return None
    if extractor.name == "sift":
        return "SIFT runs in OpenCV, not a network: there is no graph to export (cv2.SIFT_create runs anywhere)"
    return (f"extractor '{extractor.name}' has no ONNX export yet (ALIKED, DISK and SuperPoint have: --features "
            "aliked, aliked-n16rot, aliked-n32, aliked-t16, disk, superpoint)")


def graph_type(extractor: Extractor) -> type:
    """The class of ``extractor``'s export module (a :class:`ConfigError` with the reason when there is none)."""
    reason = refuse_extractor(extractor)
    if reason:
        raise ConfigError(f"export onnx: {reason}")
    from ..models.disk import DISK
    from ..models.superpoint import SuperPoint
    from ..models.xfeat import XFeat
    from .graphs import AlikedGraph, DiskGraph, SuperPointGraph, XFeatGraph

    for model, graph in ((DISK, DiskGraph), (SuperPoint, SuperPointGraph), (XFeat, XFeatGraph)):
        if isinstance(extractor, model):
            return graph
    return AlikedGraph


def export_extractor(extractor: Extractor, folder: Path) -> dict:
    """Write ``extractor.onnx``; returns its manifest entry."""
    graph = graph_type(extractor)
    channels = 1 if extractor.grayscale else 3
    example = (torch.rand(1, channels, 200, 264), torch.tensor(64), torch.tensor(-1.0))
    _export(graph(extractor), example, folder / EXTRACTOR_FILE, ["image", "max_keypoints", "detection_threshold"],
            ["keypoints", "scores", "descriptors"],
            {"image": {2: "height", 3: "width"}, "keypoints": {0: "keypoints"}, "scores": {0: "keypoints"},
             "descriptors": {0: "keypoints"}})
    max_keypoints, threshold = graph.inputs(extractor)
    return {
        "name": extractor.name, "file": EXTRACTOR_FILE, "descriptor_dim": extractor.descriptor_dim,
        "inputs": {"image": "float32 [1, C, H, W]: the network image, values in [0, 1]",
                   "max_keypoints": "int64 scalar: keypoint cap; <= 0 for none",
                   "detection_threshold": "float32 scalar: score threshold",
                   "modes": " ".join((graph.__doc__ or "").split("\n\n")[0].split())},
        "outputs": {"keypoints": "float32 [N, 2]: (x, y) in network-image pixels (pixel centres at integers)",
                    "scores": "float32 [N]", "descriptors": f"float32 [N, {extractor.descriptor_dim}], unit norm"},
        "preprocess": {"color": "gray" if extractor.grayscale else "rgb", "range": [0.0, 1.0],
                       "resize": extractor.resize,
                       "resize_method": "long side to 'resize' (null: none), aspect kept (shorter side truncated); "
                                        "when shrinking by f, a Gaussian blur of sigma (f - 1) / 2 (kernel "
                                        "odd(max(4 sigma, 3)), reflect-101 border), then bilinear, half-pixel "
                                        "centres (kornia's antialiased resize)",
                       "keypoints_to_original": "(k + 0.5) / (new_size / old_size) - 0.5 per axis"},
        "settings": {"max_keypoints": max_keypoints, "detection_threshold": threshold,
                     "nms_radius": getattr(extractor, "nms_radius", None)},
    }


def refuse_matcher(matcher: Matcher, layout: str) -> Optional[str]:
    """Why ``matcher`` cannot be exported in ``layout``, or None."""
    from ..models.lightglue import LightGlue

    if isinstance(matcher, LightGlue):
        if layout == "colmap" and matcher.variant.add_scale_ori:
            return "the COLMAP layout has no inputs for the scales and orientations SIFT's LightGlue needs"
        return None
    if matcher.name == "nn":
        return "the COLMAP layout is LightGlue's" if layout == "colmap" else None
    return (f"matcher '{matcher.name}' has no ONNX export (SuperGlue's weights are not shipped and its Sinkhorn "
            "iterations are not exported); use --matcher lightglue or nn")


def to_fp16(path: Path) -> None:
    """Rewrite the graph at ``path`` in fp16 with fp32 inputs and outputs (ONNX Runtime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))


def _lightglue_files(matcher, folder: Path, precision: str) -> dict:
    from .graphs import AssignGraph, BatchLayerGraph, EncodeGraph, LayerGraph

    v = matcher.variant
    d, dh, p = v.descriptor_dim, v.descriptor_dim // v.num_heads, 2 + 2 * v.add_scale_ori
    points = {0: "points"}
    _export(EncodeGraph(matcher), (torch.rand(7, v.input_dim), torch.rand(7, p)), folder / "matcher_encode.onnx",
            ["descriptors", "positions"], ["x", "cos", "sin"],
            {"descriptors": points, "positions": points, "x": points, "cos": points, "sin": points})
    x0, x1 = torch.rand(7, d), torch.rand(5, d)
    c0, c1 = torch.rand(7, dh), torch.rand(5, dh)
    p0, p1 = {0: "points0"}, {0: "points1"}
    xb, cb = torch.rand(3, 2, 7, d), torch.rand(3, 2, 7, dh)
    mask = torch.rand(3, 2, 7) > 0.3
    batch = {0: "pairs", 2: "points"}
    layers, batch_layers, assign = [], [], []
    for i in range(v.n_layers):
        name = f"matcher_layer{i}.onnx"
        _export(LayerGraph(matcher, i), (x0, x1, c0, c0, c1, c1), folder / name,
                ["x0", "x1", "cos0", "sin0", "cos1", "sin1"],
                ["x0_out", "x1_out", "confidence0", "confidence1", "matchability0", "matchability1"],
                {"x0": p0, "x1": p1, "cos0": p0, "sin0": p0, "cos1": p1, "sin1": p1, "x0_out": p0, "x1_out": p1,
                 "confidence0": p0, "confidence1": p1, "matchability0": p0, "matchability1": p1})
        batch_name = f"matcher_batch_layer{i}.onnx"
        _export(BatchLayerGraph(matcher, i), (xb, mask, cb, cb), folder / batch_name, ["x", "mask", "cos", "sin"],
                ["x_out", "confidence", "matchability"],
                {"x": batch, "mask": batch, "cos": batch, "sin": batch, "x_out": batch, "confidence": batch,
                 "matchability": batch})
        for graph in (name, batch_name) if precision == "fp16" else ():
            to_fp16(folder / graph)
        layers.append(name)
        batch_layers.append(batch_name)
        name = f"matcher_assign{i}.onnx"
        _export(AssignGraph(matcher, i), (x0, x1), folder / name, ["x0", "x1"], ["best0", "argbest0", "argbest1"],
                {"x0": p0, "x1": p1, "best0": p0, "argbest0": p0, "argbest1": p1})
        assign.append(name)
    return {"encode": "matcher_encode.onnx", "layers": layers, "batch_layers": batch_layers, "assign": assign}


def export_matcher(matcher: Matcher, folder: Path, layout: str = "lightmatch", precision: str = "fp32") -> dict:
    """Write the matcher's graphs; returns its manifest entry."""
    reason = refuse_matcher(matcher, layout)
    if reason:
        raise ConfigError(f"export onnx: {reason}")
    if matcher.name == "nn":
        return {"kind": "nn", "name": "nn", "settings": {"ratio_threshold": matcher.ratio_threshold,
                                                       "distance_threshold": matcher.distance_threshold},
                "note": "mutual nearest neighbours on unit descriptors: no graph, the runner computes them"}
    v = matcher.variant
    common = {"name": matcher.name, "weights": v.weights, "n_layers": v.n_layers, "input_dim": v.input_dim,
              "descriptor_dim": v.descriptor_dim, "num_heads": v.num_heads, "add_scale_ori": v.add_scale_ori}
    if layout == "colmap":
        from .graphs import ColmapLightGlue

        n = {1: "num_keypoints0"}
        m = {1: "num_keypoints1"}
        _export(ColmapLightGlue(matcher), (torch.rand(1, 7, 2) * 100, torch.rand(1, 5, 2) * 100,
                                           torch.rand(1, 7, v.input_dim), torch.rand(1, 5, v.input_dim),
                                           torch.tensor([[120.0, 100.0]]), torch.tensor([[90.0, 110.0]])),
                folder / "matcher.onnx", ["kpts0", "kpts1", "desc0", "desc1", "image_size0", "image_size1"],
                ["matches0", "mscores0"],
                {"kpts0": n, "kpts1": m, "desc0": n, "desc1": m, "matches0": {0: "num_keypoints0"},
                 "mscores0": {0: "num_keypoints0"}})
        return {**common, "kind": "colmap", "file": "matcher.onnx",
                "inputs": {"kpts0": "float32 [1, N0, 2] pixels", "kpts1": "float32 [1, N1, 2] pixels",
                           "desc0": f"float32 [1, N0, {v.input_dim}]", "desc1": f"float32 [1, N1, {v.input_dim}]",
                           "image_size0": "float32 [1, 2] (w, h)", "image_size1": "float32 [1, 2] (w, h)"},
                "outputs": {"matches0": "int64 [N0]: index into image 1, -1 for none", "mscores0": "float32 [N0]"},
                "settings": {"filter_threshold": matcher.filter_threshold, "depth": "all layers (fixed)"}}
    files = _lightglue_files(matcher, folder, precision)
    return {**common, "kind": "lightglue", **files, "precision": precision,
            "confidence_thresholds": [float(t) for t in matcher.confidence_thresholds],
            "settings": {"depth_confidence": float(matcher.depth_confidence),
                         "width_confidence": float(matcher.width_confidence),
                         "filter_threshold": float(matcher.filter_threshold),
                         "pruning_min_points": matcher.pruning_min_points(torch.device("cpu"))},
            "positions": "(k - size / 2) / (max(size) / 2), k in original-image pixels, size (w, h); SIFT: then "
                         "the scale and orientation (radians) as two more columns",
            "loop": "encode each image; run layer i on both images' tokens; after every layer but the last: stop "
                    "when the share of points with confidence >= confidence_thresholds[i] (pruned points count) "
                    "exceeds depth_confidence; keep points with matchability > 1 - width_confidence or confidence "
                    "<= confidence_thresholds[i]; at the stopping layer run assign i: mutual best matches with "
                    "probability exp(best0) > filter_threshold",
            "batch_loop": "several pairs at once: pad both images of every pair to the batch's largest point count "
                          "L (x, cos, sin [B, 2, L, .], mask [B, 2, L] True for real points) and run batch_layer i "
                          "instead of layer i; decide as in 'loop' per pair over its real points (a pruned point "
                          "becomes padding); a pair that stops leaves the batch, its remaining tokens go to assign i "
                          "unpadded"}


def export_onnx(extractor: Optional[Extractor], matcher: Optional[Matcher], folder: str | os.PathLike,
                layout: str = "lightmatch", precision: str = "fp32") -> dict:
    """Export ``extractor`` and ``matcher`` (either may be None) into ``folder``; returns the manifest written to
    ``folder/lightmatch_onnx.json``. The models are exported from the CPU in fp32; ``precision="fp16"`` converts
    LightGlue's layer graphs (fp32 inputs and outputs; 99.6-100% of the fp32 graphs' matches, docs/onnx.md) and
    keeps the extractor, encoding and assignment in fp32, where fp16 does not hold their accuracy."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout '{layout}': choose {', '.join(LAYOUTS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"export onnx writes {' or '.join(PRECISIONS)} graphs, not {precision}")
    if precision == "fp16" and layout == "colmap":
        raise ConfigError("export onnx: the COLMAP layout is fp32 only")
    for model, refuse in ((extractor, refuse_extractor), (matcher, lambda m: refuse_matcher(m, layout))):
        reason = refuse(model) if model is not None else None
        if reason:  # before any work
            raise ConfigError(f"export onnx: {reason}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "opset": OPSET, "layout": layout,
                "precision": precision, "torch": torch.__version__,
                "exporter": "torch.onnx.export, TorchScript tracer (dynamo=False)"}
    if extractor is not None:
        manifest["extractor"] = export_extractor(extractor.cpu().float(), out)
    if matcher is not None:
        manifest["matcher"] = export_matcher(matcher.cpu().float(), out, layout, precision)
    with atomic_output(out / MANIFEST, "ONNX manifest") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
