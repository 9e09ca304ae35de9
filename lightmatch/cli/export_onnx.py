"""``lightmatch export onnx``: the extractor and matcher as ONNX graphs for ONNX Runtime, COLMAP or any runner."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import extractor_options, matcher_options, model_spec
from .match import export


@export.command("onnx")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for the graphs and lightmatch_onnx.json (created; files there are replaced).")
@click.option("--layout", type=click.Choice(["lightmatch", "colmap"]), default="lightmatch", show_default=True,
              help="lightmatch: LightGlue as per-layer graphs that keep early exit and pruning (run with "
                   "lightmatch.runtime.onnx_runner or match --backend onnxruntime); colmap: LightGlue as one "
                   "fixed-depth graph with COLMAP 4's signature (kpts0/1, desc0/1, image_size0/1 -> matches0, "
                   "mscores0).")
@click.option("--no-extractor", is_flag=True, help="Export the matcher only.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON line.")
@extractor_options
@matcher_options
def export_onnx_command(output_dir: str, layout: str, no_extractor: bool, as_json: bool, **opts: Any) -> None:
    """Export the extractor and matcher to ONNX (opset 19, image size and keypoint counts dynamic).

    \b
    lightmatch export onnx -o onnx_aliked
    lightmatch export onnx -o mine --matcher-weights run/matcher.pth
    lightmatch export onnx -o colmap --layout colmap --no-extractor
    lightmatch export onnx -o half --precision fp16 --no-extractor
    python scripts/onnx_match.py onnx_aliked a.jpg b.jpg

    Graphs are fp32; --precision fp16 writes LightGlue's layers in fp16 (for GPU execution providers; the same
    matches within 1 percent). Keypoint cap and threshold are graph inputs (the export's values are defaults in
    lightmatch_onnx.json);
    SIFT (OpenCV), SuperGlue and the extractors without an export are refused with the reason.
    """
    from ..export.onnx import export_onnx

    for name, value, default in (("--backend", opts.get("backend"), "torch"),
                                 ("--rotation-search", opts.get("rotation_search"), False),
                                 ("--compile", opts.get("compile_matcher"), False)):
        if value != default:
            raise click.UsageError(f"{name} does not apply to export onnx")
    precision = {"auto": "fp32"}.get(opts["precision"], opts["precision"])
    if precision not in ("fp32", "fp16"):
        raise click.UsageError("export onnx writes fp32 graphs, or LightGlue's layers in fp16: --precision fp32|fp16")
    extractor, matcher = model_spec({**opts, "device": "cpu", "precision": "fp32"}).load()
    manifest = export_onnx(None if no_extractor else extractor, matcher, output_dir, layout, precision)
    if as_json:
        click.echo(json.dumps(manifest))
        return
    parts = []
    if "extractor" in manifest:
        parts.append(f"extractor {manifest['extractor']['name']} ({manifest['extractor']['file']})")
    m = manifest["matcher"]
    graphs = {"lightglue": lambda: f"{1 + len(m['layers']) + len(m['batch_layers']) + len(m['assign'])} graphs",
              "colmap": lambda: m["file"],
              "nn": lambda: "no graph"}[m["kind"]]()
    parts.append(f"matcher {m['name']} ({graphs})")
    click.echo(f"{output_dir}: " + ", ".join(parts) + f"; layout {layout}, described in lightmatch_onnx.json")
