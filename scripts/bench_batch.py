#!/usr/bin/env python
"""Throughput of batch matching (``lightmatch.pipeline.batch.match_batch``) against a naive per-pair loop.

The naive loop does, for every pair: read both images, extract both, match (nothing written). The batch extracts
each image once (prefetching decoder in background threads), keeps features while later pairs need them, and
writes every pair durably. Both run on the same pairs, with the same models, in the same process, after a
warm-up; keypoint counts are fixed (detection threshold 0, as LightGlue's benchmark).

    python scripts/bench_batch.py                                  # 5 freiburg_sequence frames, window 2
    python scripts/bench_batch.py --num-images 8 --keypoints 1024 2048 4096 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightmatch.io.images import load_image  # noqa: E402
from lightmatch.io.pairs import list_images, sequential_pairs  # noqa: E402
from lightmatch.models.factory import load_extractor, load_matcher  # noqa: E402
from lightmatch.pipeline.batch import match_batch  # noqa: E402


def default_images() -> Path:
    env = os.environ.get("LIGHTMATCH_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "freiburg_sequence"


def naive(image_dir: Path, pairs, extractor, matcher) -> float:
    start = time.perf_counter()
    for a, b in pairs:
        f0 = extractor.extract(load_image(image_dir / a))
        f1 = extractor.extract(load_image(image_dir / b))
        matcher.match(f0, f1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=default_images())
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--keypoints", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--features", default="aliked")
    parser.add_argument("--resize", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    if not args.image_dir.is_dir():
        sys.exit(f"{args.image_dir}: no such folder (set LIGHTMATCH_SHARED_DATA or pass --image-dir)")
    names = list_images(args.image_dir)[:args.num_images]
    pairs = sequential_pairs(names, args.window)
    print(f"{len(names)} images, {len(pairs)} pairs (sequential, window {args.window}), {args.features} at "
          f"{args.resize} px + lightglue, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for num in args.keypoints:
        extractor = load_extractor(args.features, max_keypoints=num, resize=args.resize, device=args.device,
                                   detection_threshold=0.0)
        matcher = load_matcher("lightglue", features=args.features, device=extractor.device)
        warm = extractor.extract(load_image(args.image_dir / names[0]))
        matcher.match(warm, warm)
        t_naive = naive(args.image_dir, pairs, extractor, matcher)
        with tempfile.TemporaryDirectory() as out:
            summary = match_batch(args.image_dir, pairs, out, extractor, matcher)
        assert summary.ok and summary.pairs_matched == len(pairs)
        t = summary.times
        rows.append({"keypoints": num, "pairs": len(pairs), "naive_s": round(t_naive, 2),
                     "naive_pairs_per_s": round(len(pairs) / t_naive, 3), "batch_s": round(summary.elapsed_s, 2),
                     "batch_pairs_per_s": round(summary.pairs_per_s, 3),
                     "speedup": round(t_naive / summary.elapsed_s, 2),
                     "batch_time_s": {k: round(t[k], 2) for k in ("decode", "wait", "extract", "match", "write",
                                                                  "consolidate")}})
        print(f"  {num} keypoints done", flush=True)
    print()
    print("| keypoints | pairs | naive pairs/s | batch pairs/s | speed-up | batch: decode (bg) / wait / extract / "
          "match / write+consolidate (s) |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        b = r["batch_time_s"]
        print(f"| {r['keypoints']} | {r['pairs']} | {r['naive_pairs_per_s']:.3f} | {r['batch_pairs_per_s']:.3f} | "
              f"{r['speedup']:.2f}x | {b['decode']:.2f} / {b['wait']:.2f} / {b['extract']:.1f} / {b['match']:.1f} / "
              f"{b['write'] + b['consolidate']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
