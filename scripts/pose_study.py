"""Settings study for relative pose: re-evaluate stored features/matches of `lightmatch eval pose -o RUN` runs with
every estimator x threshold x seed, and print one line per setting (mean and spread of AUC over seeds).

    python scripts/pose_study.py PAIRS IMAGES RUN_DIR[:RESIZE] ... [--estimators poselib,colmap] [--thresholds 1,2]
    python scripts/pose_study.py --plot study.png study.jsonl ...     # bar chart of earlier outputs (AUC@10)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lightmatch.eval.pose import evaluate_pose


def plot(lines: list[dict], path: str) -> None:
    """Grouped bars: AUC@10 (mean over seeds, spread as error bars) per run, one bar per estimator and threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(line["run"].rstrip("/").split("/")[-1] for line in lines))
    methods = list(dict.fromkeys(f"{line['estimator']} {line['threshold']:g} px" for line in lines))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(runs)), 4.0))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = {line["run"].rstrip("/").split("/")[-1]: line for line in lines
                  if f"{line['estimator']} {line['threshold']:g} px" == method}
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, run in enumerate(runs) if run in values]
        rows = [values[run] for run in runs if run in values]
        ax.bar(xs, [r["auc"][1] for r in rows], width, yerr=[r["auc10_std"] for r in rows], label=method)
    lowest = min(line["auc"][1] for line in lines)
    ax.set_ylim(max(0.0, lowest - 5), min(100.0, max(line["auc"][1] for line in lines) + 3))
    ax.set_xticks(range(len(runs)), runs, rotation=20, ha="right")
    ax.set_ylabel("AUC@10 (%)")
    ax.legend(fontsize=7, ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", metavar="PNG", help="plot the JSON lines files given as arguments instead")
    args, rest = parser.parse_known_args()
    if args.plot:
        plot([json.loads(line) for name in rest for line in open(name) if line.strip()], args.plot)
        return
    parser.add_argument("pairs")
    parser.add_argument("images")
    parser.add_argument("runs", nargs="+", help="RUN_DIR of an eval pose -o run, optionally :RESIZE (e.g. :-1)")
    parser.add_argument("--estimators", default="opencv,magsac,poselib,colmap")
    parser.add_argument("--thresholds", default="0.5,1,1.5,2,3")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    for run in args.runs:
        run_dir, _, resize = run.partition(":")
        resize_list = [int(r) for r in resize.split(",")] if resize else [640, 480]
        for estimator in args.estimators.split(","):
            for threshold in [float(t) for t in args.thresholds.split(",")]:
                rows = [evaluate_pose(args.pairs, args.images, resize=resize_list, seed=int(seed),
                                      ransac_thresh=threshold, estimator=estimator,
                                      features_h5=f"{run_dir}/features.h5", matches_h5=f"{run_dir}/matches.h5").summary
                        for seed in args.seeds.split(",")]
                auc = np.array([[r["auc@5"], r["auc@10"], r["auc@20"]] for r in rows])
                print(json.dumps({"run": run_dir, "estimator": estimator, "threshold": threshold,
                                  "auc": auc.mean(0).round(2).tolist(), "auc10_std": round(float(auc[:, 1].std()), 2),
                                  "auc10_seeds": auc[:, 1].round(2).tolist(),
                                  "failed": float(np.mean([r["num_failed"] for r in rows]))}), flush=True)


if __name__ == "__main__":
    main()
