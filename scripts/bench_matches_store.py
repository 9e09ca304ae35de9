#!/usr/bin/env python
"""How hloc's one-group-per-pair ``matches.h5`` behaves as it grows (for docs/scaling.md).

For each size, writes N synthetic pair groups in hloc's layout (``name0/name1`` with ``matches0`` int32 and
``matching_scores0`` float32 of ``--keypoints`` entries, the pairs of a sequence: each image with the next
``--window``) through :mod:`lightmatch.io.h5` as consolidation does, then measures:

- write: creating all groups in one open file (what one consolidation of that many parts costs, less the reads);
- size on disk, and bytes per pair;
- index: opening the file and listing every pair (``h5.match_groups``, what ``OutputStore`` does on open);
- read: ``--reads`` random pairs looked up with ``h5.find_pair`` and read, as hloc's ``get_matches`` does
  (file opened once), in a fresh process (cold metadata cache);
- copy: ``shutil.copyfile`` of the whole file (what each consolidation pays before appending: ``atomic_h5``).

    python scripts/bench_matches_store.py --pairs 10000 100000 --json sizes.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightmatch.io import h5  # noqa: E402
from lightmatch.types import Matches  # noqa: E402


def synthetic_pairs(count: int, window: int) -> list[tuple[str, str]]:
    images = count // window + window + 1
    names = [f"seq/frame{i:07d}.jpg" for i in range(images)]
    return [(names[i], names[i + k]) for i in range(images) for k in range(1, window + 1)
            if i + k < images][:count]


def write(path: Path, pairs: list[tuple[str, str]], keypoints: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    m0 = rng.integers(-1, keypoints, keypoints).astype(np.int32)
    s0 = rng.random(keypoints).astype(np.float32)
    matches = Matches(torch.from_numpy(m0), torch.from_numpy(s0))
    start = time.perf_counter()
    with h5py.File(path, "w") as handle:
        for name0, name1 in pairs:
            h5.put_matches(handle, name0, name1, matches)
    return time.perf_counter() - start


READER = """
import sys, time, random, h5py
sys.path.insert(0, {repo!r})
from lightmatch.io import h5
path, reads, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
with h5py.File(path, "r") as f:
    keys = h5.match_groups(f)
index = time.perf_counter() - t
random.seed(0)
sample = [k.split("/") for k in random.sample(keys, min(reads, len(keys)))]
t = time.perf_counter()
with h5py.File(path, "r") as f:
    for a, b in sample:
        key, reverse = h5.find_pair(f, b.replace("-", "/"), a.replace("-", "/"))  # reversed: the slow path
        m, s = f[key]["matches0"][()], f[key]["matching_scores0"][()]
read = time.perf_counter() - t
print(index, read / len(sample))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keypoints", type=int, default=1024)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for count in args.pairs:
            path = Path(tmp) / f"matches-{count}.h5"
            pairs = synthetic_pairs(count, args.window)
            write_s = write(path, pairs, args.keypoints)
            size = path.stat().st_size
            out = subprocess.run([sys.executable, "-c", READER.format(repo=str(REPO)), str(path), str(args.reads),
                                  str(args.window)], capture_output=True, text=True, check=True).stdout.split()
            t = time.perf_counter()
            shutil.copyfile(path, Path(tmp) / "copy.h5")
            copy_s = time.perf_counter() - t
            (Path(tmp) / "copy.h5").unlink()
            row = {"pairs": len(pairs), "keypoints": args.keypoints, "write_s": round(write_s, 2),
                   "write_pairs_per_s": round(len(pairs) / write_s), "size_mb": round(size / 1e6, 1),
                   "bytes_per_pair": round(size / len(pairs)), "index_s": round(float(out[0]), 2),
                   "read_ms_per_pair": round(float(out[1]) * 1000, 3), "copy_s": round(copy_s, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.unlink()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
