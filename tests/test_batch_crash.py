"""Crash safety of batch matching with real processes: SIGKILL at several points, Ctrl-C (SIGINT), then resume.

Each kill is decided by polling the part files that completed pairs leave in ``OUTDIR/.parts``. After every kill,
each completed pair must be readable; rerunning the same command must finish the rest, and the final stores must
equal (same keypoints, same matches, same inliers) those of an uninterrupted run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from helpers import (
    LIGHTMATCH,
    assert_same_stores,
    assert_store_invariant,
    invoke,
    json_lines,
    make_images,
    store_contents,
)

from lightmatch.io import h5

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def pair_parts(out: Path) -> list[Path]:
    parts = out / ".parts"
    return sorted(parts.glob("*-m.h5")) if parts.is_dir() else []


def completed_pairs_readable(out: Path) -> int:
    """Open every completed piece of work (consolidated stores and part files); returns the number of pairs."""
    count = 0
    for path in [out / "matches.h5", *pair_parts(out)]:
        if path.exists():
            with h5py.File(path, "r") as handle:
                if h5.INDEX_GROUP in handle:  # a sharded top file: its pairs through their external links
                    for key in h5.match_groups(handle):
                        assert handle[key]["matches0"][()].ndim == 1 and "inliers" in handle[key]
                        count += 1
                    continue
                groups = handle["matches"] if "matches" in handle else handle
                def visit(key, obj):
                    nonlocal count
                    if isinstance(obj, h5py.Group) and "matches0" in obj:
                        assert obj["matches0"][()].ndim == 1 and "inliers" in obj
                        count += 1
                groups.visititems(visit)
    for path in [out / "features.h5", *(out / ".parts").glob("*-f.h5")]:
        if path.exists():
            with h5py.File(path, "r") as handle:
                handle.visit(lambda key: None)
    return count


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    make_images(root / "imgs", 10, seed=1, size=(384, 288), step=12, prefix="f")
    args = (f"match --image-dir {root / 'imgs'} --pairs-mode sequential --window 3 --features sift --matcher nn "
            "--resize -1 --max-keypoints 400 --verify homography --seed 7 -q")
    invoke(*shlex.split(args), "-o", root / "ref")
    return root, args


def _default_sigint() -> None:
    # a test run started in the background (`cmd &` in a script, nohup) ignores SIGINT, and children inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: str, out: Path) -> subprocess.Popen:
    # one part per pair (LIGHTMATCH_STORE_CHUNK=1): the kills are decided by counting parts
    return subprocess.Popen([str(LIGHTMATCH), *shlex.split(args), "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint,
                            env={**os.environ, "LIGHTMATCH_STORE_CHUNK": "1"})


def wait_for_parts(process: subprocess.Popen, out: Path, count: int, timeout: float = 90.0) -> bool:
    """Poll until this run has left ``count`` new pair parts; False when the process ended first."""
    before = set(pair_parts(out))  # parts of a killed run, until this run consolidates them
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(set(pair_parts(out)) - before) >= count:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("batch made no progress")


def test_sigkill_at_several_points_then_resume(setup):
    root, args = setup
    out = root / "killed"
    total = sum(key.endswith("/matches0") for key in store_contents(root / "ref/matches.h5"))
    assert total == 24  # sequential pairs of 10 images, window 3
    kills = 0
    for count in (1, 3, 5):
        process = start(args, out)
        reached = wait_for_parts(process, out, count)
        if reached:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        done = completed_pairs_readable(out)  # every completed pair survives the kill
        assert done >= count or not reached
        print(f"killed after {count} new pairs: {done} pairs saved" if reached else "run ended first")
    assert kills >= 2, "runs finished before they could be killed"
    assert 0 < completed_pairs_readable(out) < total
    final = invoke(*shlex.split(args), "-o", out, "--json")  # the resume, in-process
    summary = json_lines(final.stdout)[-1]
    assert summary["type"] == "summary" and summary["pairs_skipped"] >= 5  # it resumed: the saved pairs are kept
    assert summary["pairs_skipped"] + summary["pairs_matched"] == total
    assert_store_invariant(out)
    assert_same_stores(root / "ref", out)


def test_ctrl_c_stops_cleanly_after_saving(setup):
    root, args = setup
    out = root / "interrupted"
    process = start(args, out)
    assert wait_for_parts(process, out, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not (out / ".parts").exists()  # consolidated on the way out
    with h5py.File(out / "matches.h5") as handle:
        assert len(h5.match_groups(handle)) >= 2
    invoke(*shlex.split(args), "-o", out)
    assert_store_invariant(out)
    assert_same_stores(root / "ref", out)


def test_single_pair_killed_while_writing_leaves_nothing_behind(setup, tmp_path):
    """A single-pair run killed at any point leaves the folder readable, and the next run repairs it and removes
    what the killed one left (temporary stores, parts, the lock file)."""
    root, _ = setup
    images = [root / "imgs" / f"f{i:02d}.png" for i in range(4)]
    model = "--features sift --matcher nn --resize -1 --max-keypoints 400".split()
    out = tmp_path / "out"
    invoke("match", images[0], images[1], "-o", out, *model)
    for delay in (0.3, 0.6, 0.9, 1.2):  # kills at several points of a run: loading, extracting, writing
        process = subprocess.Popen([str(LIGHTMATCH), "match", str(images[2]), str(images[3]), "-o", str(out), *model],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        with h5py.File(out / "features.h5", "r") as handle:  # never corrupted
            assert "f00.png" in handle and "f01.png" in handle
    (out / ".features.h5.left-by-a-killed-run.tmp").write_bytes(b"x" * 1000)
    invoke("match", images[2], images[3], "-o", out, *model)
    assert_store_invariant(out)
    with h5py.File(out / "features.h5", "r") as handle:
        assert h5.feature_groups(handle) == ["f00.png", "f01.png", "f02.png", "f03.png"]
