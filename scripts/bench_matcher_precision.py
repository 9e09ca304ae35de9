#!/usr/bin/env python
"""LightGlue in fp32 and in bf16 on real exhaustive pairs, alternated in one run: time, stop layers, pruned points.

Features are extracted once (fp32 ALIKED, exact keypoint count); each round matches every pair with the fp32 matcher,
then with the bf16 one. Answers whether the matcher's adaptive behaviour (early exit, pruning) on real pairs differs
by precision, and the bf16 / fp32 ratio of the matcher alone on those pairs.

    python scripts/bench_matcher_precision.py --image-dir ../shared/data/sacre_coeur --num-images 4 \\
        --keypoints 2048 --resize 1024 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightmatch.io.images import load_image  # noqa: E402
from lightmatch.io.pairs import list_images  # noqa: E402
from lightmatch.models.factory import load_extractor, load_matcher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--keypoints", type=int, default=2048)
    parser.add_argument("--resize", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = list_images(args.image_dir)[:args.num_images]
    extractor = load_extractor("aliked", max_keypoints=args.keypoints, resize=args.resize, device="cpu",
                               detection_threshold=0.0)
    feats = {n: extractor.extract(load_image(args.image_dir / n)) for n in names}
    pairs = list(itertools.combinations(names, 2))
    matchers = {p: load_matcher("lightglue", features="aliked", device="cpu", precision=p) for p in ("fp32", "bf16")}
    for matcher in matchers.values():  # warm-up
        matcher.match(feats[names[0]], feats[names[1]])
    seconds: dict[str, list[float]] = {p: [] for p in matchers}
    for _ in range(args.rounds):
        for precision, matcher in matchers.items():
            start = time.perf_counter()
            found = [matcher.match(feats[a], feats[b]) for a, b in pairs]
            seconds[precision].append(time.perf_counter() - start)
            print(f"{precision}: {seconds[precision][-1]:.2f} s, stop layers {[m.stop_layer for m in found]}, "
                  f"pruned {[(m.info['pruned0'], m.info['pruned1']) for m in found]}, "
                  f"matches {[m.num_matches for m in found]}", flush=True)
    print(f"{len(pairs)} pairs, {args.keypoints} keypoints, {args.threads} thread(s): bf16 / fp32 time "
          f"{min(seconds['bf16']) / min(seconds['fp32']):.2f}")


if __name__ == "__main__":
    main()
