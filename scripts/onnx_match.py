"""Match two images with a ``lightmatch export onnx`` folder, without torch: numpy, OpenCV and ONNX Runtime only.

    lightmatch export onnx -o onnx_aliked            # once, where lightmatch and torch are installed
    python scripts/onnx_match.py onnx_aliked a.jpg b.jpg --output matches.npz

Prints the keypoint and match counts (and the layer LightGlue stopped after); ``--output`` writes the keypoints,
descriptors, matches0 and mscores0 as an ``.npz``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lightmatch.runtime.onnx_runner import OnnxPipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("image0", type=Path)
    parser.add_argument("image1", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per graph (default: ONNX Runtime's)")
    parser.add_argument("--output", type=Path, default=None, help="write features and matches here (.npz)")
    args = parser.parse_args()

    pipeline = OnnxPipeline(args.export_dir, threads=args.threads)
    start = time.perf_counter()
    feats0 = pipeline.extract(pipeline.read_image(args.image0))
    feats1 = pipeline.extract(pipeline.read_image(args.image1))
    extracted = time.perf_counter()
    result = pipeline.match(feats0, feats1)
    done = time.perf_counter()
    summary = {"keypoints0": len(feats0), "keypoints1": len(feats1), "matches": int((result.matches0 > -1).sum()),
               "stop_layer": result.stop_layer, "extract_ms": round((extracted - start) * 1e3, 1),
               "match_ms": round((done - extracted) * 1e3, 1), "torch_imported": "torch" in sys.modules}
    print(json.dumps(summary))
    if args.output is not None:
        np.savez(args.output, keypoints0=feats0.keypoints, keypoints1=feats1.keypoints,
                 descriptors0=feats0.descriptors, descriptors1=feats1.descriptors, matches0=result.matches0,
                 mscores0=result.scores0)


if __name__ == "__main__":
    main()
