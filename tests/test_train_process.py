"""Training as a process: one run per folder (lock), SIGKILL at random points then resume (each step logged once,
no temporary files left), SIGINT / SIGTERM stop after the step with a checkpoint and the exact same final weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lightmatch.cli import main

REPO = Path(__file__).resolve().parents[1]
STEPS = 12


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Four images and a config: SIFT, 32 keypoints, 128x96 crops, a 1-layer LightGlue, every step logged."""
    root = tmp_path_factory.mktemp("train")
    images = root / "images"
    images.mkdir()
    for p in sorted((shared_data / "freiburg_sequence").glob("*.png"))[:4]:
        (images / p.name).symlink_to(p)
    config = root / "config.json"
    config.write_text(json.dumps({"features": "sift", "images": [str(images)], "steps": STEPS, "batch_size": 2,
                                  "n_layers": 1, "num_keypoints": 32, "patch_size": [128, 96], "val_every": 4,
                                  "val_pairs": 2, "checkpoint_every": 3, "log_every": 1, "device": "cpu",
                                  "val_fraction": 0.25}))
    return {"root": root, "images": images, "config": config, "cache": root / "cache"}


def start(setup, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lightmatch", "train", "--config", str(setup["config"]), "-o", str(out),
           "--cache", str(setup["cache"]), "-q", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_here(setup, out: Path) -> None:
    """Run the run in ``out`` to its end in this process, resuming it when it has a checkpoint: what is tested
    there is the state the killed or stopped processes left, not a process boundary. Single-threaded, as
    :func:`start`'s processes are, so that the steps compute alike."""
    resume = ["--resume"] if (out / "last.pth").exists() else []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(main, ["train", "--config", str(setup["config"]), "-o", str(out), "--cache",
                                           str(setup["cache"]), "-q", *resume])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(proc: subprocess.Popen, condition, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.01)
    return False


def model_of(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["step"] == STEPS
    return state["model"]


def assert_same_model(a: Path, b: Path) -> None:
    ma, mb = model_of(a), model_of(b)
    assert set(ma) == set(mb)
    for key in ma:
        assert torch.allclose(ma[key], mb[key], atol=1e-6), key


def assert_clean_log(out: Path) -> None:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r["step"] for r in records if r["split"] == "train"]
    val = [r["step"] for r in records if r["split"] == "val"]
    assert train == list(range(1, STEPS + 1))
    assert val == [0, 4, 8, 12]


def assert_no_tmp(*folders: Path) -> None:
    leftovers = [p for folder in folders for p in folder.rglob("*.tmp")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def straight(setup) -> dict:
    """The uninterrupted run, which the others must reproduce; while it runs, a second run on its folder is tried."""
    out = setup["root"] / "straight"
    first = start(setup, out)
    assert wait_for(first, lambda: (out / ".lightmatch.lock").exists() and logged(out) >= 1), first.stderr
    second = CliRunner().invoke(main, ["train", "--config", str(setup["config"]), "-o", str(out), "--cache",
                                       str(setup["cache"]), "-q"])
    code, _, err = finish(first)
    assert code == 0, err
    return {"out": out, "pid": first.pid, "second": second}


@pytest.mark.slow
def test_second_run_on_a_folder_is_refused_and_the_first_finishes(straight):
    second, out = straight["second"], straight["out"]
    assert second.exit_code == 1, second.output
    lines = second.output.strip().splitlines()
    assert len(lines) == 1 and f"pid {straight['pid']}" in lines[0] and str(out) in lines[0], second.output
    assert "another lightmatch run" in lines[0]
    assert_clean_log(out)  # the first run's log and checkpoints are its own
    assert not (out / ".lightmatch.lock").exists()


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(setup, straight):
    """Killed three times (SIGKILL, SIGTERM, SIGKILL) a random number of log lines after each start."""
    out = setup["root"] / "killed"
    rng = random.Random(0)
    for round_, sig in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]):
        resume = ("--resume",) if (out / "last.pth").exists() else ()
        proc = start(setup, out, *resume)
        target = logged(out) + rng.randint(1, 4)
        wait_for(proc, lambda: logged(out) >= target)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(sig)
        code, _, err = finish(proc)
        if sig == signal.SIGTERM and code != 0:  # 0: the run ended first
            assert code == 143 and "--resume" in err, err
        if round_ == 1 and (out / "metrics.jsonl").exists():  # a write cut short: the next resume copes
            with open(out / "metrics.jsonl", "a") as f:
                f.write('{"split": "train", "step": 9')
        (setup["cache"] / ".0.pt.abc.tmp").write_bytes(b"half")  # a killed cache write
        (out / ".last.pth.abc.tmp").write_bytes(b"half")
    finish_here(setup, out)
    assert_clean_log(out)
    assert_same_model(out, straight["out"])
    assert_no_tmp(out, setup["cache"])


@pytest.mark.slow
def test_ctrl_c_stops_after_the_step_with_a_checkpoint(setup, straight):
    out = setup["root"] / "stopped"
    proc = start(setup, out)
    assert wait_for(proc, lambda: logged(out) >= 4)
    proc.send_signal(signal.SIGINT)
    returncode, _, err = finish(proc)
    assert returncode == 130, err
    step = torch.load(out / "last.pth", weights_only=True)["step"]
    assert 0 < step < STEPS
    assert f"stopped at step {step} of {STEPS}" in err and f"lightmatch train -o {out} --resume" in err
    finish_here(setup, out)
    assert_clean_log(out)
    assert_same_model(out, straight["out"])


@pytest.mark.slow
def test_no_validation_exports_the_last_model(setup, tmp_path):
    result = CliRunner().invoke(main, ["train", "--config", str(setup["config"]), "-o", str(tmp_path / "r"),
                                       "--val-pairs", "0", "--steps", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # what is prepared, first: images, split, steps; then the features
    assert "4 images (3 training, 1 validation); 2 steps of 2 pairs" in lines[0], lines[0]
    assert lines[1].startswith("features: sift, 32 keypoints per image, on cpu; 4 training pairs"), lines[1]
    assert "no validation" in result.output
    printed = [line.split()[1] for line in result.output.splitlines() if line.startswith("weights:")]
    assert printed == [str(tmp_path / "r" / "matcher.pth")] and Path(printed[0]).is_file()
