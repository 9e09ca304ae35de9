"""Where batching pairs pays on this machine: LightGlue ``match_many`` (B pairs padded + masked) against ``match``
one pair at a time, on the same features, in the same run (ratios, not absolute times).

    PYTHONPATH=$PWD python scripts/bench_batch_pairs.py --keypoints 256 512 1024 --batch 1 2 4 8
"""

from __future__ import annotations

import argparse
import time

import torch

from lightmatch.models.lightglue import LightGlue
from lightmatch.types import Features


def features(n: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    kpts = torch.rand(n, 2, generator=g) * torch.tensor([640.0, 480.0])
    return Features(kpts, torch.rand(n, generator=g),
                    torch.nn.functional.normalize(torch.randn(n, 128, generator=g), dim=1), (640, 480))


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--mode", choices=["full", "adaptive"], default="full")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    depth, width = (-1, -1) if args.mode == "full" else (0.95, 0.99)
    lg = LightGlue("aliked", depth_confidence=depth, width_confidence=width)
    print(f"threads={torch.get_num_threads()} mode={args.mode}")
    print("keypoints batch  one-by-one pairs/s  batched pairs/s  speed-up")
    for n in args.keypoints:
        for b in args.batch:
            # sizes vary by up to 10% inside a batch, as real images do
            pairs = [(features(n - (i * n) // 20, 2 * i), features(n, 2 * i + 1)) for i in range(b)]
            single = timed(lambda: [lg.match(f0, f1) for f0, f1 in pairs], args.repeats)
            batched = timed(lambda: lg.match_many(pairs), args.repeats)
            print(f"{n:9d} {b:5d} {b / single:19.2f} {b / batched:16.2f} {single / batched:9.2f}x")


if __name__ == "__main__":
    main()
