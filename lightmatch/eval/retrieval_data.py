"""A mixed image folder with known overlap, for measuring retrieval: scenes of the shared data side by side, plus
homography warps of a few images (overlap with their source by construction).

Ground truth is a group per image: two images overlap when they are in the same group. Groups: Sacré-Cœur (the
10 photos and the two of ``lightglue_bench``), the two ``DSC_041x`` photos, the Freiburg desk sequence, one per
ScanNet scene; a warp joins its source's group.
"""

from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..io.images import read_image
from .homography_data import synthetic_homography

WARP_SIDE = 640  # long side of the warped images


def build_mixed_folder(shared: str | os.PathLike, out: str | os.PathLike, freiburg_step: int = 1,
                       scannet_scenes: int = 15, warp_sources: int = 3, warps_per_source: int = 2,
                       difficulty: float = 0.5, seed: int = 0) -> dict[str, str]:
    """Fill ``out`` with links to shared-data images (``sacre_coeur/``, ``lightglue_bench/``, every
    ``freiburg_step``-th Freiburg frame, the first ``scannet_scenes`` ScanNet scenes) and ``warps/``: ``warps_per_
    source`` homography warps of ``warp_sources`` images (one per non-Sacré-Cœur group first). Returns image name
    (relative to ``out``) -> group."""
    shared, out = Path(shared), Path(out)
    groups: dict[str, str] = {}

    def link(source: Path, name: str, group: str) -> None:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(source.resolve(), target)
        groups[name] = group

    for path in sorted((shared / "sacre_coeur").glob("*.jpg")):
        link(path, f"sacre_coeur/{path.name}", "sacre_coeur")
    bench = shared / "lightglue_bench"
    for name, group in (("sacre_coeur1.jpg", "sacre_coeur"), ("sacre_coeur2.jpg", "sacre_coeur"),
                        ("DSC_0410.JPG", "dsc"), ("DSC_0411.JPG", "dsc")):
        link(bench / name, f"bench/{name}", group)
    for path in sorted((shared / "freiburg_sequence").glob("*.png"))[::freiburg_step]:
        link(path, f"freiburg/{path.name}", "freiburg")
    scannet = sorted((shared / "scannet_sample" / "images").glob("*.jpg"))
    scenes = sorted({p.name.split("_frame")[0] for p in scannet})[:scannet_scenes]
    for path in scannet:
        scene = path.name.split("_frame")[0]
        if scene in scenes:
            link(path, f"scannet/{path.name}", f"scannet/{scene}")
    if not groups:
        raise InputError(f"{shared}: none of the shared data sets found")

    rng = np.random.default_rng(seed)
    firsts = {}
    for name, group in groups.items():
        firsts.setdefault(group, name)
    sources = [n for g, n in firsts.items() if g != "sacre_coeur"] + [firsts.get("sacre_coeur")]
    for source in [s for s in sources if s is not None][:warp_sources]:
        image = read_image(out / source)
        h, w = image.shape[:2]
        scale = WARP_SIDE / max(w, h)
        size = (round(w * scale), round(h * scale))
        for i in range(warps_per_source):
            H = synthetic_homography(rng, w, h, out_size=size, difficulty=difficulty)
            name = f"warps/{Path(source).stem}_warp{i}.jpg"
            groups[name] = groups[source]
            if (out / name).exists():  # made by an earlier call (the same warp: same seed)
                continue
            warped = cv2.warpPerspective(image, H, size, flags=cv2.INTER_AREA)
            (out / "warps").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / name), cv2.cvtColor(warped, cv2.COLOR_RGB2BGR) if warped.ndim == 3 else warped)
    return dict(sorted(groups.items()))


def overlapping_pairs(groups: dict[str, str]) -> set[frozenset[str]]:
    """Every pair of images of one group."""
    by_group: dict[str, list[str]] = {}
    for name, group in groups.items():
        by_group.setdefault(group, []).append(name)
    return {frozenset(p) for names in by_group.values() for p in combinations(names, 2)}


def recall_at_k(neighbours: dict[str, list[str]], relevant: dict[str, set[str]], k: int) -> float:
    """Mean over images with any relevant image of |top-k ∩ relevant| / min(k, |relevant|)."""
    scores = [len(set(neighbours[n][:k]) & relevant[n]) / min(k, len(relevant[n]))
              for n in neighbours if relevant.get(n)]
    return float(np.mean(scores)) if scores else 0.0
