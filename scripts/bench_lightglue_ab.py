#!/usr/bin/env python
"""Another tree's ``lightmatch/models/lightglue.py`` against this tree's, in one process, calls alternated.

Both load the same weights and match the same ALIKED features of the bundled sample pair (top-N, long side 1024),
adaptive and full; prints, per N and mode, each median latency, new / old (median, and of the fastest calls), and
whether matches and stop layers agree. The old file is imported under another module name inside this tree's
package, so its relative imports resolve to this tree's modules.

    git archive main | tar -x -C /tmp/base
    python scripts/bench_lightglue_ab.py /tmp/base/lightmatch/models/lightglue.py --repeat 7
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightmatch.models.lightglue as new  # noqa: E402
from lightmatch.io.images import load_image  # noqa: E402
from lightmatch.models.factory import load_extractor  # noqa: E402

MODES = {"adaptive": (0.95, 0.99), "full": (-1.0, -1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the other tree's lightmatch/models/lightglue.py")
    parser.add_argument("--num-keypoints", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("lightmatch.models.lightglue_old", args.old)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    print(f"{torch.get_num_threads()} threads", flush=True)
    for n in args.num_keypoints:
        ext = load_extractor("aliked", max_keypoints=n, resize=1024, detection_threshold=0.0)
        f0, f1 = (ext.extract(load_image(REPO / "assets" / f"sample{i}.jpg")) for i in (0, 1))
        for mode, (depth, width) in MODES.items():
            a = old.LightGlue("aliked", depth_confidence=depth, width_confidence=width)
            b = new.LightGlue("aliked", depth_confidence=depth, width_confidence=width)
            ma, mb = a.match(f0, f1), b.match(f0, f1)  # warm-up, and the results compared
            ta, tb = [], []
            for _ in range(args.repeat):
                for model, times in ((a, ta), (b, tb)):
                    start = time.perf_counter()
                    model.match(f0, f1)
                    times.append(time.perf_counter() - start)
            same = torch.equal(ma.matches0, mb.matches0) and ma.stop_layer == mb.stop_layer
            print(f"{n} {mode}: old {statistics.median(ta) * 1e3:.0f} ms, new {statistics.median(tb) * 1e3:.0f} ms, "
                  f"new / old {statistics.median(tb) / statistics.median(ta):.3f} (fastest calls "
                  f"{min(tb) / min(ta):.3f}), same matches and stop layer: {same}", flush=True)


if __name__ == "__main__":
    main()
