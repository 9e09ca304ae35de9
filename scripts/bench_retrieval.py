"""Top-K retrieval time on synthetic global descriptors: our exact chunked search against faiss's exact flat index
(and, where it fits in memory, the full score matrix), same run, same vectors.

    python scripts/bench_retrieval.py --sizes 10000,100000 --dim 256 --k 10

Each size: n random unit vectors searched against themselves (each its K nearest others), as retrieval pairing
does. Prints one JSON line per size: seconds per backend, their ratio, whether the results agree, and the exact
search's peak memory (tracemalloc, numpy allocations) against the n x n matrix it avoids.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from lightmatch.retrieval.topk import brute_force_top_k, top_k

FULL_MATRIX_MAX = 20_000  # brute force only up to this n (its n x n matrix: 1.6 GB at 20k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in map(int, args.sizes.split(",")):
        x = rng.standard_normal((n, args.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        row = {"n": n, "dim": args.dim, "k": args.k}
        tracemalloc.start()
        t = time.perf_counter()
        exact = top_k(x, x, args.k, exclude_self=True)
        row["exact_s"] = round(time.perf_counter() - t, 2)
        row["exact_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
        row["full_matrix_mb"] = round(n * n * 4 / 2**20, 1)
        try:
            t = time.perf_counter()
            found = top_k(x, x, args.k, exclude_self=True, backend="faiss")
            row["faiss_s"] = round(time.perf_counter() - t, 2)
            row["faiss_over_exact"] = round(row["faiss_s"] / row["exact_s"], 2)
            row["faiss_same"] = bool(np.array_equal(found[0], exact[0]))
            row["faiss_same_rows"] = round(float((found[0] == exact[0]).all(1).mean()), 4)
        except Exception as exc:  # noqa: BLE001 (faiss missing: report and go on)
            row["faiss"] = str(exc)
        if n <= FULL_MATRIX_MAX:
            t = time.perf_counter()
            brute = brute_force_top_k(x, x, args.k, exclude_self=True)
            row["full_matrix_s"] = round(time.perf_counter() - t, 2)
            row["brute_same"] = bool(np.array_equal(brute[0], exact[0]))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
