"""fp16 against fp32 exports (docs/onnx.md, Precision): LightGlue's layer graphs per pair and batched (identical
matches, stopping layers, match counts), and the XFeat and SuperPoint extractor graphs converted whole (keypoints
within 1e-3 px). Run from the repository root with the shared data in ../shared/data or $LIGHTMATCH_SHARED_DATA;
writes into a temporary folder.

    python scripts/onnx_fp16_agreement.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # a checkout without installing; tests/helpers for SuperPoint

from helpers import superpoint_checkpoint  # noqa: E402

import lightmatch as lm  # noqa: E402
from lightmatch.export.onnx import EXTRACTOR_FILE, export_onnx, to_fp16  # noqa: E402
from lightmatch.models.onnx_backend import onnx_models  # noqa: E402
from lightmatch.models.superpoint import SuperPoint  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    bench = Path(os.environ.get("LIGHTMATCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "lightglue_bench"
    tmp = Path(tempfile.mkdtemp(prefix="onnx_fp16_"))
    pairs = {"sample": (REPO / "assets/sample0.jpg", REPO / "assets/sample1.jpg"),
             "easy": (bench / "DSC_0410.JPG", bench / "DSC_0411.JPG"),
             "difficult": (bench / "sacre_coeur1.jpg", bench / "sacre_coeur2.jpg")}
    extractor = lm.load_extractor("aliked", max_keypoints=1024, detection_threshold=-1, resize=640, device="cpu")
    matcher = lm.load_matcher("lightglue", features="aliked", device="cpu")
    for precision in ("fp32", "fp16"):
        export_onnx(None, matcher, tmp / precision, precision=precision)
    m32, m16 = (onnx_models(extractor, matcher, tmp / p)[1] for p in ("fp32", "fp16"))
    features = [tuple(extractor.extract(lm.load_image(path)) for path in pair) for pair in pairs.values()]
    out = {}
    for depth, width in ((-1.0, -1.0), (0.95, 0.99)):
        for model in (m32, m16):
            model.depth_confidence, model.width_confidence = depth, width
        reference = [m32.match(*pair) for pair in features]
        for how, results in (("pair", [m16.match(*pair) for pair in features]), ("batch", m16.match_many(features))):
            for name, ref, got in zip(pairs, reference, results):
                mode = "full" if depth < 0 else "adaptive"
                out[f"{name} {mode} {how}"] = {
                    "identical_%": round(100 * float((ref.matches0 == got.matches0).double().mean()), 2),
                    "stop_layer": [ref.stop_layer, got.stop_layer], "matches": [ref.num_matches, got.num_matches]}
    nn = lm.load_matcher("nn", device="cpu")
    image = lm.load_image(pairs["sample"][0])
    for name, model in (("xfeat", lm.load_extractor("xfeat", max_keypoints=1024, resize=640, device="cpu")),
                        ("superpoint", SuperPoint(state_dict=superpoint_checkpoint(), resize=640,
                                                  max_keypoints=1024))):
        export_onnx(model, nn, tmp / name)
        f32 = onnx_models(model, nn, tmp / name)[0].extract(image)
        to_fp16(tmp / name / EXTRACTOR_FILE)
        f16 = onnx_models(model, nn, tmp / name)[0].extract(image)
        k32, k16 = ({tuple(k) for k in f.keypoints.round(decimals=3).tolist()} for f in (f32, f16))
        out[f"{name} extractor"] = {"keypoints": [len(f32), len(f16)],
                                    "same_keypoints_%": round(100 * len(k32 & k16) / max(len(k32), 1), 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
