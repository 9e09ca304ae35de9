"""End to end on ``shared/data/sacre_coeur`` (10 photos): pairs | extract | match --verify | export colmap, then
``pycolmap.incremental_mapping`` must register at least 9 of the 10 images with a mean reprojection error below
1.5 px. ALIKED (640 px, 512 keypoints: measured 10 of 10 registered at 0.71 px) + LightGlue: about 8 s
on 2 idle CPU cores, so it is not marked ``slow``."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import invoke

MODEL = "--features aliked --resize 640 --max-keypoints 512"


def lightmatch(args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``lightmatch ARGS`` in this process, in ``cwd``; it must succeed."""
    return invoke(*shlex.split(args), cwd=cwd, stdin=stdin)


def test_sacre_coeur_reconstruction(shared_data, tmp_path):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (test extra) is needed for the reconstruction")
    images = shared_data / "sacre_coeur"
    pairs = lightmatch(f"pairs {images} --mode exhaustive", tmp_path).stdout
    assert len(pairs.splitlines()) == 45
    extract = json.loads(lightmatch(f"extract {images} -o out {MODEL} --json", tmp_path).stdout.splitlines()[-1])
    assert extract["images_extracted"] == 10
    match = lightmatch(f"match --image-dir {images} --pairs - -o out {MODEL} --verify fundamental --json",
                       tmp_path, stdin=pairs)
    summary = json.loads(match.stdout.splitlines()[-1])
    assert summary["pairs_matched"] == 45 and summary["images_reused"] == 10 and summary["images_extracted"] == 0
    lightmatch(f"export colmap --image-dir {images} --features out/features.h5 --matches out/matches.h5 "
               "--database out/database.db", tmp_path)

    reconstructions = pycolmap.incremental_mapping(str(tmp_path / "out/database.db"), str(images),
                                                   str(tmp_path / "sfm"))
    assert reconstructions, "no reconstruction"
    best = max(reconstructions.values(), key=lambda r: r.num_reg_images())
    print(f"registered {best.num_reg_images()}/10, mean reprojection error "
          f"{best.compute_mean_reprojection_error():.3f} px, {best.num_points3D()} points; match "
          f"{summary['pairs_per_s']:.2f} pairs/s")
    assert best.num_reg_images() >= 9
    assert best.compute_mean_reprojection_error() < 1.5
