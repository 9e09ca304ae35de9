"""``lightmatch reconstruct`` on ``shared/data/sacre_coeur`` (10 photos) plus one broken file: every photo
registered under 1 px, the outputs, the summary; then, from the same folder, a run killed with SIGKILL and resumed
(nothing redone, the same stores); the global mapper, retrieval pairs and option errors on the stores already made.

ALIKED (640 px, 512 keypoints: measured 10 of 10 registered, 620 points at 0.68 px) + LightGlue: one full run is
about 10 s on 2 CPU cores; the module makes two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import LIGHTMATCH, assert_same_stores, invoke

from lightmatch.cli import main

MODEL = ["--resize", "640", "--max-keypoints", "512"]


@pytest.fixture(scope="module")
def scene(shared_data, tmp_path_factory) -> Path:
    """The 10 photos (links) and a file that is not an image."""
    pytest.importorskip("pycolmap", reason="pycolmap (the sfm extra) is needed to reconstruct")
    folder = tmp_path_factory.mktemp("scene") / "images"
    folder.mkdir()
    for path in sorted((shared_data / "sacre_coeur").glob("*.jpg")):
        (folder / path.name).symlink_to(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


@pytest.fixture(scope="module")
def reference(scene, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reference") / "out"
    result = CliRunner().invoke(main, ["reconstruct", str(scene), "-o", str(out), "--json", *MODEL])
    assert result.exit_code == 3, result.output  # the broken file: reported, left out
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_reconstruct_registers_every_photo(reference):
    out, summary = reference
    print(summary)
    assert summary["images"] == 11 and summary["images_failed"] == 1 and "broken.jpg" in summary["failed_images"]
    assert summary["registered"] == 10 and summary["models"] == 1
    assert summary["mean_reprojection_error"] < 1.0 and summary["points"] > 500
    assert summary["mean_track_length"] > 2 and summary["pairs_mode"] == "exhaustive" and summary["pairs"] == 55
    for name in ("features.h5", "matches.h5", "pairs.txt", "database.db", "sparse/0/images.bin",
                 "sparse/0/points3D.bin"):
        assert (out / name).is_file(), name
    assert (out / "top_view_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "sparse" / "1").exists()


@pytest.mark.slow  # a second full run (about 12 s on 2 idle cores)
def test_killed_run_resumes_without_redoing_work(scene, reference, tmp_path):
    """SIGKILL during matching (the installed script, a real process), rerun (in this process: only the kill needs
    a process boundary): the images and pairs finished before the kill are not redone, and the stores equal those
    of the uninterrupted run."""
    out = tmp_path / "out"
    command = [str(LIGHTMATCH), "reconstruct", str(scene), "-o", str(out), "--json", *MODEL]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "LIGHTMATCH_STORE_CHUNK": "1"})
    parts = out / ".parts"  # one part file per pair (chunks of one), so that the count below says how far it got
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("*-m.h5"))) >= 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    images_done = len(list(parts.glob("*-f.h5")))
    pairs_done = len(list(parts.glob("*-m.h5")))
    assert pairs_done >= 5

    rerun = invoke(*command[1:], check_code=None)
    assert rerun.returncode == 3, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])  # text summary, then the JSON line
    assert summary["images_extracted"] == 10 - images_done
    assert summary["pairs_skipped"] == pairs_done and summary["pairs_matched"] == 45 - pairs_done
    assert summary["registered"] == 10 and summary["mean_reprojection_error"] < 1.0
    assert_same_stores(out, reference[0])
    assert "reconstruct: match" in rerun.stderr  # progress on stderr, one line per stage


def test_global_mapper_and_retrieval_on_the_stores(scene, reference):
    """Reruns into the reference folder: nothing extracted or matched again, only another mapper or pairing."""
    out, _ = reference
    result = CliRunner().invoke(main, ["reconstruct", str(scene), "-o", str(out), "--json", "--mapper", "global",
                                       *MODEL])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["images_extracted"] == 0 and summary["pairs_matched"] == 0
    assert summary["registered"] == 10 and summary["mean_reprojection_error"] < 1.5
    result = CliRunner().invoke(main, ["reconstruct", str(scene), "-o", str(out), "--json", "--pairs-mode",
                                       "retrieval", "--num-matched", "4", *MODEL])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["pairs_mode"] == "retrieval" and summary["pairs"] < 45 and summary["pairs_matched"] == 0
    assert summary["images_extracted"] == 0 and summary["registered"] >= 9
    assert len((out / "pairs.txt").read_text().splitlines()) == summary["pairs"]


def test_single_camera_needs_one_size(scene, reference):
    result = CliRunner().invoke(main, ["reconstruct", str(scene), "-o", str(reference[0]), "--single-camera",
                                       *MODEL])
    assert result.exit_code == 1 and "single_camera needs images of one size" in result.output


def test_without_pycolmap_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and 'pip install "lightmatch[sfm]"' in result.output


@pytest.mark.parametrize("args, message", [
    (["--pairs-mode", "exhaustive", "--num-matched", "5"], "--num-matched goes with --pairs-mode retrieval"),
    (["--window", "3"], "--window and --retrieval go with --pairs-mode sequential"),
])
def test_reconstruct_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output
