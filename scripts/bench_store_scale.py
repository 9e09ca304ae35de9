"""Measure the output store at scale, single-file layout (before shards) against the sharded one.

For each size it builds a synthetic store of N pairs (matches arrays of ``--matches-size`` entries, images with
small features) in both layouts, then reports, in the same run:

- open: ``OutputStore.open`` (lock, settings check, the index of images and pairs) on the finished store;
- add 1,000: the second of two resumed runs that each add 1,000 new pairs: open, write, finish (the single-file
  layout copies ``matches.h5`` once to add them, as its consolidation did; the sharded one renames parts and
  links them);
- peak extra disk of that run (single file: the temporary copy of ``matches.h5`` beside the old one; sharded: the
  new shards plus the growth of the top files and their spares);
- hloc read: hloc's ``get_matches`` on 1,000 random pairs (open the file, ``pair in hfile`` in both orders, read).

    python scripts/bench_store_scale.py --pairs 10000 100000 1000000 --out /tmp/bench_store

Writes one JSON line per (layout, size) to stdout and a Markdown table to stderr. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from lightmatch.io import h5
from lightmatch.io.store import OutputStore
from lightmatch.types import Features, Matches

FEATURE_ATTRS = {"lightmatch_extractor": "synthetic"}
MATCH_ATTRS = {"lightmatch_extractor": "synthetic", "lightmatch_matcher": "synthetic"}


def plan(pairs: int, per_image: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Images and pairs: each image paired with the next ``per_image`` images (a retrieval-like pair list)."""
    count = pairs // per_image + per_image + 1
    names = [f"img{i:07d}.jpg" for i in range(count)]
    out = [(names[i], names[i + k]) for i in range(count) for k in range(1, per_image + 1) if i + k < count]
    return names, out[:pairs]


def items(size: int, keypoints: int):
    rng = np.random.default_rng(0)
    feats = Features.from_numpy(rng.random((keypoints, 2), dtype=np.float32), rng.random(keypoints, dtype=np.float32),
                                rng.random((keypoints, 8), dtype=np.float32), (640, 480))
    m = Matches(torch.from_numpy(rng.integers(-1, keypoints, size).astype(np.int32)), torch.rand(size))
    return feats, m


def disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_single(folder: Path, names, pairs, feats, m) -> None:
    folder.mkdir(parents=True)
    with h5py.File(folder / "features.h5", "w") as handle:
        h5.set_attrs(handle, FEATURE_ATTRS)
        for name in names:
            h5.put_features(handle, name, feats)
    with h5py.File(folder / "matches.h5", "w") as handle:
        h5.set_attrs(handle, MATCH_ATTRS)
        for a, b in pairs:
            h5.put_matches(handle, a, b, m)


def build_sharded(folder: Path, names, pairs, feats, m) -> None:
    with OutputStore(folder, FEATURE_ATTRS, MATCH_ATTRS, chunk=1000) as store:
        for start in range(0, len(names), 1000):
            store.commit(features={n: feats for n in names[start:start + 1000]})
        for start in range(0, len(pairs), 1000):
            store.commit(matches={p: (m, None) for p in pairs[start:start + 1000]})


def add_single(folder: Path, new, feats, m) -> int:
    """The single-file layout's resumed run: index walk on open, then its consolidation (a copy of matches.h5)."""
    with OutputStore(folder, FEATURE_ATTRS, MATCH_ATTRS) as store:  # read as it is: no parts, no upgrade
        assert not any(store.has_pair(a, b) for a, b in new[:10])
    with h5.atomic_h5(folder / "matches.h5") as handle:
        for a, b in new:
            h5.put_matches(handle, a, b, m)
    return (folder / "matches.h5").stat().st_size  # the temporary copy, beside the old file, at its largest


def add_sharded(folder: Path, new, feats, m) -> int:
    before = disk(folder)
    with OutputStore(folder, FEATURE_ATTRS, MATCH_ATTRS) as store:
        for a, b in new:
            if not store.has_pair(a, b):
                store.commit(matches={(a, b): (m, None)})
    return disk(folder) - before


def hloc_reads(path: Path, pairs, count: int = 1000) -> float:
    picks = random.Random(0).sample(pairs, min(count, len(pairs)))
    t = time.perf_counter()
    for a, b in picks:
        with h5py.File(str(path), "r", libver="latest") as hfile:
            key = h5.names_to_pair(a, b)
            if key not in hfile:
                key = h5.names_to_pair(b, a)
            hfile[key]["matches0"].__array__()
            hfile[key]["matching_scores0"].__array__()
    return (time.perf_counter() - t) / len(picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--layouts", nargs="+", default=["single-file", "sharded"],
                        choices=["single-file", "sharded"])
    parser.add_argument("--single-file-max", type=int, default=100_000,
                        help="largest size measured in the single-file layout (its copies grow with the store)")
    parser.add_argument("--matches-size", type=int, default=256, help="entries of each pair's matches0")
    parser.add_argument("--keypoints", type=int, default=256)
    parser.add_argument("--per-image", type=int, default=50, help="pairs per image")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (removed at the end)")
    args = parser.parse_args()
    feats, m = items(args.matches_size, args.keypoints)
    rows = []
    for size in args.pairs:
        names, pairs = plan(size + 2000, args.per_image)
        old, first, new = pairs[:size], pairs[size:size + 1000], pairs[size + 1000:]
        for layout in args.layouts:
            if layout == "single-file" and size > args.single_file_max:
                continue
            folder = args.out / f"{layout}-{size}"
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            (build_single if layout == "single-file" else build_sharded)(folder, names, old, feats, m)
            build = time.perf_counter() - t
            size_before = disk(folder)
            t = time.perf_counter()
            with OutputStore(folder, FEATURE_ATTRS, MATCH_ATTRS):
                pass
            opened = time.perf_counter() - t
            add = add_single if layout == "single-file" else add_sharded
            add(folder, first, feats, m)  # a first resumed run; the second is measured (the steady state)
            t = time.perf_counter()
            extra = add(folder, new, feats, m)
            added = time.perf_counter() - t
            read = hloc_reads(folder / "matches.h5", pairs)
            top = (folder / "matches.h5").stat().st_size
            row = {"layout": layout, "pairs": size, "build_s": round(build, 1), "store_mb": round(size_before / 1e6),
                   "open_s": round(opened, 3), "add_1000_s": round(added, 2), "peak_extra_mb": round(extra / 1e6, 1),
                   "hloc_read_ms": round(read * 1e3, 2), "matches_h5_mb": round(top / 1e6, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(folder)
    print("| layout | pairs | store MB | open s | add 1,000 pairs s | peak extra disk MB | hloc read ms |",
          file=sys.stderr)
    print("|---|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for r in rows:
        print(f"| {r['layout']} | {r['pairs']:,} | {r['store_mb']:,} | {r['open_s']} | {r['add_1000_s']} | "
              f"{r['peak_extra_mb']:,} | {r['hloc_read_ms']} |", file=sys.stderr)


if __name__ == "__main__":
    main()
