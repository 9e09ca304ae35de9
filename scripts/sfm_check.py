"""Structure-from-motion check: match an image folder with lightmatch (exhaustive pairs, verified), export to COLMAP,
reconstruct with pycolmap, and report registration, reprojection error, and the relative poses of every registered
pair against a reference COLMAP model (e.g. one built by ``scripts/build_colmap_gt.py``).

    python scripts/sfm_check.py ../shared/data/sacre_coeur out/fp32 --reference gt/sacre_coeur/sparse -- \
        --features disk --max-keypoints 2048
    python scripts/sfm_check.py ../shared/data/sacre_coeur out/bf16 --reference gt/sacre_coeur/sparse -- \
        --features disk --max-keypoints 2048 --precision bf16

Everything after ``--`` goes to ``lightmatch extract`` and ``lightmatch match``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from lightmatch.eval.metrics import angle_error_mat, angle_error_vec

LIGHTMATCH = Path(sys.executable).parent / "lightmatch"


def lightmatch(args: list[str], stdin: str | None = None) -> str:
    out = subprocess.run([str(LIGHTMATCH), *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lightmatch {shlex.join(args)}: {out.stderr.strip()}")
    return out.stdout


def relative_pose_errors(model, reference) -> list[float]:
    """max(rotation, translation-direction) error in degrees of each pair registered in both models."""
    def poses(rec):
        return {im.name: im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
                for im in rec.images.values() if im.has_pose}
    ours, ref = poses(model), poses(reference)
    errors = []
    for a, b in itertools.combinations(sorted(set(ours) & set(ref)), 2):
        mine, truth = (p[b] * p[a].inverse() for p in (ours, ref))
        errors.append(max(angle_error_mat(mine.rotation.matrix(), truth.rotation.matrix()),
                          angle_error_vec(mine.translation, truth.translation)))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--reference", type=Path, default=None, help="COLMAP model to compare relative poses with")
    parser.add_argument("--verify", default="fundamental")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, model_args = parser.parse_args(argv[:split]), argv[split + 1:]

    import pycolmap

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    pairs = lightmatch(["pairs", str(args.images), "--mode", "exhaustive"])
    summary = json.loads(lightmatch(["match", "--image-dir", str(args.images), "--pairs", "-", "-o", str(out),
                                     "--verify", args.verify, "--json", *model_args], stdin=pairs).splitlines()[-1])
    database = out / "database.db"
    database.unlink(missing_ok=True)
    lightmatch(["export", "colmap", "--image-dir", str(args.images), "--features", str(out / "features.h5"),
                "--matches", str(out / "matches.h5"), "--database", str(database)])
    models = pycolmap.incremental_mapping(str(database), str(args.images), str(out / "sfm"))
    best = max(models.values(), key=lambda r: r.num_reg_images()) if models else None
    result = {"options": shlex.join(model_args), "pairs": summary["pairs_matched"],
              "registered": best.num_reg_images() if best else 0,
              "points": best.num_points3D() if best else 0,
              "mean_track_length": best.compute_mean_track_length() if best else None,
              "mean_reprojection_error": best.compute_mean_reprojection_error() if best else None}
    if args.reference is not None and best is not None:
        errors = relative_pose_errors(best, pycolmap.Reconstruction(str(args.reference)))
        result.update(pairs_compared=len(errors), median_pose_error_deg=float(np.median(errors)),
                      pairs_within_5deg=int(np.sum(np.array(errors) < 5)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
