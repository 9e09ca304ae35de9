#!/usr/bin/env python
"""Another tree's ``lightmatch/models/lightglue.py`` against this tree's, in one process, calls alternated.

Both load the same weights and match the same ALIKED features (top-N, long side 1024): the bundled sample pair, or
with ``--image-dir`` the exhaustive pairs of the first ``--num-images`` images there (real pairs: real early exit
and pruning). Per N, mode (adaptive, full) and precision: each median time (of one call over all the pairs),
new / old (median, and of the fastest calls), and whether the matches and stop layers agree (bf16: the share of
identical matches). The old file is imported under another module name inside this tree's package, so its relative
imports resolve to this tree's modules.

    git archive main | tar -x -C /tmp/base
    python scripts/bench_lightglue_ab.py /tmp/base/lightmatch/models/lightglue.py --repeat 7
    python scripts/bench_lightglue_ab.py /tmp/base/lightmatch/models/lightglue.py --image-dir \\
        ../shared/data/sacre_coeur --num-images 5 --num-keypoints 2048 --precision fp32 bf16 --repeat 2
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
from lightmatch.io.pairs import exhaustive_pairs, list_images  # noqa: E402
from lightmatch.models.factory import load_extractor  # noqa: E402

MODES = {"adaptive": (0.95, 0.99), "full": (-1.0, -1.0)}


def feature_pairs(n: int, image_dir: Path | None, num_images: int) -> list:
    """ALIKED top-``n`` features of the sample pair, or of the exhaustive pairs of ``image_dir``'s first images."""
    ext = load_extractor("aliked", max_keypoints=n, resize=1024, detection_threshold=0.0)
    if image_dir is None:
        return [tuple(ext.extract(load_image(REPO / "assets" / f"sample{i}.jpg")) for i in (0, 1))]
    names = list_images(image_dir)[:num_images]
    feats = {name: ext.extract(load_image(image_dir / name)) for name in names}
    return [(feats[a], feats[b]) for a, b in exhaustive_pairs(names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the other tree's lightmatch/models/lightglue.py")
    parser.add_argument("--num-keypoints", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--image-dir", type=Path, default=None, help="real pairs: exhaustive pairs of these images")
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("lightmatch.models.lightglue_old", args.old)
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    print(f"{torch.get_num_threads()} threads", flush=True)
    for n in args.num_keypoints:
        pairs = feature_pairs(n, args.image_dir, args.num_images)
        for precision in args.precision:
            for mode, (depth, width) in MODES.items():
                a, b = (module.LightGlue("aliked", depth_confidence=depth, width_confidence=width,
                                         precision=precision) for module in (old, new))
                ma, mb = ([model.match(f0, f1) for f0, f1 in pairs] for model in (a, b))  # warm-up, and compared
                ta, tb = [], []
                for _ in range(args.repeat):
                    for model, times in ((a, ta), (b, tb)):
                        start = time.perf_counter()
                        for f0, f1 in pairs:
                            model.match(f0, f1)
                        times.append(time.perf_counter() - start)
                same = all(torch.equal(x.matches0, y.matches0) and x.stop_layer == y.stop_layer
                           for x, y in zip(ma, mb))
                identical = sum(float((x.matches0 == y.matches0).float().mean()) for x, y in zip(ma, mb)) / len(ma)
                stops = sum(x.stop_layer == y.stop_layer for x, y in zip(ma, mb))
                print(f"{n} {precision} {mode}, {len(pairs)} pair(s): old {statistics.median(ta) * 1e3:.0f} ms, "
                      f"new {statistics.median(tb) * 1e3:.0f} ms, new / old "
                      f"{statistics.median(tb) / statistics.median(ta):.3f} (fastest calls {min(tb) / min(ta):.3f}), "
                      f"same matches and stop layers: {same} ({identical:.2%} identical matches, "
                      f"{stops}/{len(pairs)} stop layers)", flush=True)


if __name__ == "__main__":
    main()
