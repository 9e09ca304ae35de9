"""Batched ONNX matching (``OnnxMatcher.match_many``, one padded batch) against pair by pair (``match``), in one run,
alternating: seconds per repetition, the ratio, identical matches and stopping layers (docs/benchmarks.md). Run from
the repository root, under the benchmark lock:

    flock /tmp/lightmatch-bench.lock python scripts/onnx_batch_timing.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a checkout without installing

import lightmatch as lm  # noqa: E402
from lightmatch.models.onnx_backend import onnx_models  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    bench = Path(os.environ.get("LIGHTMATCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "lightglue_bench"
    images = [REPO / "assets/sample0.jpg", REPO / "assets/sample1.jpg", bench / "DSC_0410.JPG",
              bench / "DSC_0411.JPG", bench / "sacre_coeur1.jpg", bench / "sacre_coeur2.jpg"]
    extractor = lm.load_extractor("aliked", max_keypoints=1024, detection_threshold=0.2, resize=640, device="cpu")
    matcher = lm.load_matcher("lightglue", features="aliked", device="cpu")
    _, onnx_matcher = onnx_models(extractor, matcher)
    feats = [extractor.extract(lm.load_image(path)) for path in images]
    pairs = [(feats[i], feats[i + 1]) for i in (0, 2, 4)] + [(feats[i + 1], feats[i]) for i in (0, 2, 4)]
    result = {"keypoints": [len(f) for f in feats]}
    for depth, width in ((-1.0, -1.0), (0.95, 0.99)):
        onnx_matcher.depth_confidence, onnx_matcher.width_confidence = depth, width
        times: dict[str, list[float]] = {"pair": [], "batch": []}
        for _ in range(3):
            start = time.perf_counter()
            single = [onnx_matcher.match(*pair) for pair in pairs]
            times["pair"].append(time.perf_counter() - start)
            start = time.perf_counter()
            many = onnx_matcher.match_many(pairs)
            times["batch"].append(time.perf_counter() - start)
        result["full" if depth < 0 else "adaptive"] = {
            "pair_s": [round(t, 3) for t in times["pair"]], "batch_s": [round(t, 3) for t in times["batch"]],
            "pair/batch": round(sum(times["pair"]) / sum(times["batch"]), 2),
            "identical_%": [round(100 * float((a.matches0 == b.matches0).double().mean()), 2)
                            for a, b in zip(single, many)],
            "stop_layer": [(a.stop_layer, b.stop_layer) for a, b in zip(single, many)]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
