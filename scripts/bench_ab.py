#!/usr/bin/env python
"""``lightmatch benchmark`` of two source trees, alternated in one run: the speed ratio of a change.

    git archive BASE | tar -x -C /tmp/base
    scripts/bench_ab.py /tmp/base . --rounds 2 -- --pairs-dir data/lightglue_bench --num-keypoints 1024 2048 \\
        --repeat 5 --warmup 2 --threads 1

Each round runs A then B (``python -m lightmatch benchmark ... --json`` with PYTHONPATH set to the tree); the
report is, per (pair, config, keypoints), the median over rounds of each tree's mean time and B / A (below 1:
B is faster). Matches and stop layers of both trees are printed side by side (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run([sys.executable, "-m", "lightmatch", "benchmark", "--json", *args], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="source tree A (before)")
    parser.add_argument("b", type=Path, help="source tree B (after)")
    parser.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    opts, args = parser.parse_args(argv[:cut]), argv[cut + 1:]  # after --: lightmatch benchmark options
    times: dict[tuple, dict[str, list[float]]] = {}
    results: dict[tuple, dict[str, tuple]] = {}
    for _ in range(opts.rounds):
        for label, tree in (("A", opts.a), ("B", opts.b)):
            for r in run(tree, args)["records"]:
                key = (r["pair"], r["config"], r["num_keypoints"])
                times.setdefault(key, {"A": [], "B": []})[label].append(r["mean_ms"])
                results.setdefault(key, {})[label] = (r["matches"], r["stop_layer"])
    print(f"{'pair':<12}{'config':<10}{'N':>6}{'A ms':>10}{'B ms':>10}{'B/A':>7}  matches/stop A | B")
    ratios = []
    for key, t in times.items():
        a, b = statistics.median(t["A"]), statistics.median(t["B"])
        ratios.append(b / a)
        print(f"{key[0]:<12}{key[1]:<10}{key[2]:>6}{a:>10.1f}{b:>10.1f}{b / a:>7.2f}  "
              f"{results[key]['A']} | {results[key]['B']}")
    print(f"geometric mean B/A: {statistics.geometric_mean(ratios):.3f}")


if __name__ == "__main__":
    main()
