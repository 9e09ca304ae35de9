"""Retrieval against exhaustive matching on a mixed folder built from the shared data
(:func:`lightmatch.eval.retrieval_data.build_mixed_folder`), for docs/reconstruction.md.

    python scripts/retrieval_study.py ../shared/data out/study --resize 640 --max-keypoints 1024
    python scripts/retrieval_study.py ../shared/data out/small --freiburg-step 3 --scannet-scenes 5 --from-scratch 10

1. ``reconstruct`` with exhaustive pairs (wall time; its verified matches are the ground truth: pairs with at least
   ``--min-inliers`` inliers); ``--reuse``: the stores of an earlier run, mapped again.
2. From its features (no second extraction): VLAD vectors with several codebook sizes; recall@5/10/20 of the
   verified pairs by the pairs retrieval proposes, against random pairs (the same number per image, mean of 20
   draws); recall of same-group images.
3. For K = 5, 10, 20: the share of the exhaustive pairs retrieval keeps, and the images the mapper registers from
   those pairs alone (the exhaustive run's matches, so no matching is redone).
4. ``reconstruct`` with retrieval pairs from scratch (``--from-scratch K``...), wall time against step 1.

Prints one JSON object per measurement, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np

from lightmatch.eval.retrieval_data import build_mixed_folder, overlapping_pairs, recall_at_k
from lightmatch.io.colmap import export_colmap
from lightmatch.io.pairs import list_images
from lightmatch.models.factory import load_extractor, load_matcher
from lightmatch.retrieval.pairs import pairs_from_neighbours, read_descriptors
from lightmatch.retrieval.topk import top_k
from lightmatch.retrieval.vlad import CODEBOOK_SIZE, sample_descriptors, train_codebook, vlad
from lightmatch.sfm.mapper import run_mapper
from lightmatch.sfm.reconstruct import ReconstructOptions, reconstruct


def show(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def verified_pairs(matches_path: Path, names: list[str], min_inliers: int) -> set[frozenset[str]]:
    by_key = {n.replace("/", "-"): n for n in names}
    out = set()
    with h5py.File(matches_path, "r") as handle:
        def visit(key, obj):
            if isinstance(obj, h5py.Group) and "inliers" in obj and int(obj["inliers"][()].sum()) >= min_inliers:
                a, b = key.split("/")
                out.add(frozenset((by_key[a], by_key[b])))
        handle.visititems(visit)
    return out


def pair_recall(pairs: list[tuple[str, str]], truth: set[frozenset[str]]) -> float:
    found = {frozenset(p) for p in pairs}
    return len(found & truth) / max(1, len(truth))


def random_pairs(names: list[str], k: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    indices = np.stack([rng.choice(np.delete(np.arange(len(names)), i), k, replace=False) for i in range(len(names))])
    return pairs_from_neighbours(names, indices, names)


def pca_whiten(x: np.ndarray, dims: int = 256) -> np.ndarray:
    """PCA-whitening learned on ``x`` itself (at most n - 1 components), then power and L2 normalisation."""
    centred = x - x.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    keep = min(dims, len(x) - 1)
    y = centred @ vt[:keep].T / (sv[:keep] / np.sqrt(len(x)) + 1e-6)
    y = np.sign(y) * np.sqrt(np.abs(y))
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shared", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--resize", type=int, default=640)
    parser.add_argument("--max-keypoints", type=int, default=1024)
    parser.add_argument("--freiburg-step", type=int, default=1)
    parser.add_argument("--scannet-scenes", type=int, default=10)
    parser.add_argument("--min-inliers", type=int, default=100)
    parser.add_argument("--codebook-sizes", default="16,32,64,128")  # must hold CODEBOOK_SIZE
    parser.add_argument("--from-scratch", default="10", help="K values reconstructed from scratch (wall time)")
    parser.add_argument("--reuse", action="store_true",
                        help="use the exhaustive stores of an earlier run into the same folder (step 1 maps them "
                             "again, untimed)")
    args = parser.parse_args()

    folder = args.output / "images"
    groups = build_mixed_folder(args.shared, folder, freiburg_step=args.freiburg_step,
                                scannet_scenes=args.scannet_scenes)
    names = list_images(folder)
    show({"type": "folder", "images": len(names), "groups": len(set(groups.values())),
          "exhaustive_pairs": len(names) * (len(names) - 1) // 2})

    def models():
        extractor = load_extractor("aliked", max_keypoints=args.max_keypoints, resize=args.resize, device="cpu")
        return extractor, load_matcher("lightglue", features="aliked", device=extractor.device)

    runs = {}
    exhaustive_dir = args.output / "exhaustive"
    if args.reuse:
        found = run_mapper(exhaustive_dir / "database.db", folder, exhaustive_dir / "sparse")
        registered_exhaustive = sum(m.num_reg_images() for m in found.values())
        show({"type": "reconstruct", "pairs_mode": "exhaustive (stores reused)", "registered": registered_exhaustive,
              "models": len(found)})
    else:
        t = time.perf_counter()
        result = reconstruct(folder, exhaustive_dir, *models(), ReconstructOptions(pairs_mode="exhaustive"))
        runs["exhaustive"] = time.perf_counter() - t
        show({"type": "reconstruct", "pairs_mode": "exhaustive", "wall_s": round(runs["exhaustive"], 1),
              **{k: v for k, v in result.to_json().items() if k in ("registered", "models", "points", "pairs",
                                                                     "mean_reprojection_error", "time_s")}})
        registered_exhaustive = result.registered

    truth = verified_pairs(exhaustive_dir / "matches.h5", names, args.min_inliers)
    same_group = overlapping_pairs(groups)
    relevant = {n: {m for p in same_group if n in p for m in p if m != n} for n in names}
    show({"type": "ground_truth", "verified_pairs": len(truth), "same_group_pairs": len(same_group),
          "verified_within_groups": len(truth & same_group)})

    descriptors = read_descriptors(exhaustive_dir / "features.h5", names)
    rng = np.random.default_rng(0)
    for k in (5, 10, 20):
        draws = [pair_recall(random_pairs(names, k, rng), truth) for _ in range(20)]
        show({"type": "recall", "method": "random", "K": k, "recall_verified": round(float(np.mean(draws)), 3)})
    chosen = {}
    for size in map(int, args.codebook_sizes.split(",")):
        codebook = train_codebook(sample_descriptors(descriptors.values()), "aliked", size=size)
        vectors = np.stack([vlad(descriptors[n], codebook) for n in names])
        variants = {f"vlad-{size}": vectors}
        if size == CODEBOOK_SIZE:
            variants[f"vlad-{size}+pca-whitening"] = pca_whiten(vectors)
        for method, x in variants.items():
            indices, _ = top_k(x, x, 20, exclude_self=True)
            neighbours = {n: [names[j] for j in row] for n, row in zip(names, indices)}
            for k in (5, 10, 20):
                pairs = pairs_from_neighbours(names, indices[:, :k], names)
                show({"type": "recall", "method": method, "K": k, "pairs": len(pairs),
                      "recall_verified": round(pair_recall(pairs, truth), 3),
                      "recall_same_group": round(recall_at_k(neighbours, relevant, k), 3)})
                if method == f"vlad-{CODEBOOK_SIZE}":  # the default codebook size
                    chosen[k] = pairs

    for k, pairs in chosen.items():  # mapping from the retrieval pairs alone, on the exhaustive matches
        sub = args.output / f"subset_k{k}"
        sub.mkdir(parents=True, exist_ok=True)
        export_colmap(folder, exhaustive_dir / "features.h5", exhaustive_dir / "matches.h5", sub / "database.db",
                      pairs=pairs)
        found = run_mapper(sub / "database.db", folder, sub / "sparse")
        show({"type": "subset", "K": k, "pairs": len(pairs),
              "share_of_exhaustive": round(len(pairs) / (len(names) * (len(names) - 1) / 2), 3),
              "registered": sum(m.num_reg_images() for m in found.values()), "models": len(found),
              "registered_exhaustive": registered_exhaustive})

    for k in map(int, filter(None, args.from_scratch.split(","))):
        t = time.perf_counter()
        result = reconstruct(folder, args.output / f"retrieval_k{k}", *models(),
                             ReconstructOptions(pairs_mode="retrieval", num_matched=k))
        runs[f"retrieval_k{k}"] = time.perf_counter() - t
        show({"type": "reconstruct", "pairs_mode": f"retrieval K={k}", "wall_s": round(runs[f"retrieval_k{k}"], 1),
              "speedup_vs_exhaustive": round(runs["exhaustive"] / runs[f"retrieval_k{k}"], 2) if runs.get(
                  "exhaustive") else None,
              **{key: v for key, v in result.to_json().items() if key in ("registered", "models", "points", "pairs",
                                                                         "mean_reprojection_error", "time_s")}})
    show({"type": "summary", "wall_s": {k: round(v, 1) for k, v in runs.items()}})


if __name__ == "__main__":
    main()
