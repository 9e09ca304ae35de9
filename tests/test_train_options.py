"""Every option of ``lightmatch train`` is checked before any work: a bad value is a usage error (exit 2) naming
the option and what it accepts, with no traceback, no model loaded and no output folder created."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import make_images

from lightmatch.cli import main

CASES = [  # (extra arguments, text the one-line message must contain)
    (["--patch-size", "640"], "--patch-size"),
    (["--patch-size", "0x0"], "--patch-size"),
    (["--patch-size", "641x480"], "multiple of 8"),
    (["--patch-size", "100000x480"], "--patch-size"),
    (["--patch-size", "axb"], "--patch-size"),
    (["--init", "officail"], "--init 'officail': choose scratch, official or an existing weights file"),
    (["--init", "official", "--n-layers", "3"], "--n-layers 3"),
    (["--batch-size", "100000"], "--batch-size must be an integer in [1, 512]"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "512", "--num-keypoints", "8192"], "--num-keypoints 8192"),
    (["--steps", "0"], "--steps must be an integer in [1,"),
    (["--steps", "-5"], "--steps"),
    (["--steps", "ten"], "--steps"),
    (["--epochs", "2"], "exactly one of --steps and --epochs"),
    (["--lr", "nan"], "--lr must be a finite number in (0, 1]"),
    (["--lr", "-1e-4"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--val-pairs", "-1"], "--val-pairs must be an integer in [0, 10000]"),
    (["--val-pairs", "1000000"], "--val-pairs"),
    (["--val-every", "0"], "--val-every"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--num-keypoints", "3"], "--num-keypoints must be an integer in [16, 8192]"),
    (["--n-layers", "0"], "--n-layers must be an integer in [1, 32]"),
    (["--n-layers", "1000"], "--n-layers"),
    (["--seed", "-1"], "--seed"),
    (["--device", "gpu7"], "--device 'gpu7'"),
    (["--features", "aliked-t16"], "--features 'aliked-t16'"),
    (["--features", "orb"], "--features 'orb'"),
    (["--matcher", "superglue"], "--features superpoint"),
    (["--matcher", "nn"], "--matcher"),
    (["--weights", "missing.pth"], "--weights"),
    (["--precision", "fp8"], "--precision"),
    (["--images", "no-such-folder"], "--images"),
    (["--config", "no-such.json"], "--config"),
]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    make_images(folder, 2, size=(128, 96))
    return folder


def check_refused(args, expected, out, lines: int = 1):
    """Exit 2 with the message as the last of ``lines`` lines (the first of two says what the run prepares)."""
    result = CliRunner().invoke(main, ["train", *args])
    text = result.output.strip()
    assert result.exit_code == 2, text
    assert "Traceback" not in text and len(text.splitlines()) == lines, text
    assert expected in text.splitlines()[-1], text
    assert not out.exists()


@pytest.mark.parametrize("extra, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_option_is_a_usage_error_before_any_work(images, tmp_path, extra, expected):
    out = tmp_path / "run"
    check_refused(["--images", str(images), "-o", str(out), "--steps", "1", *extra], expected, out)


def test_bad_values_in_a_config_file_are_named_too(images, tmp_path):
    out = tmp_path / "run"
    for values, expected in [({"batch_size": "4"}, "--batch-size"), ({"patch_size": [640]}, "--patch-size"),
                             ({"lr": 0}, "--lr"), ({"warmup": 3}, "warmup"), ({"checkpointing": "yes"},
                                                                                "--gradient-checkpointing")]:
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"images": [str(images)], "steps": 1, **values}))
        check_refused(["--config", str(config), "-o", str(out)], expected, out)


def test_paths_that_are_files_and_resume_without_a_run(images, tmp_path):
    afile = tmp_path / "file"
    afile.write_text("")
    out = tmp_path / "run"
    check_refused(["--images", str(images), "-o", str(out), "--steps", "1", "--cache", str(afile)], "--cache", out)
    check_refused(["--images", str(images), "-o", str(afile), "--steps", "1"], "-o", tmp_path / "nothing")
    check_refused(["-o", str(out), "--resume"], "does not exist; start the run without --resume", out)
    out.mkdir()
    result = CliRunner().invoke(main, ["train", "-o", str(out), "--resume"])
    assert result.exit_code == 2 and "holds no run to resume" in result.output, result.output
    assert list(out.iterdir()) == []


def test_device_checks_leave_no_folder(images, tmp_path):
    """A device that is not there is found once torch is loaded, before any model: the run folder this call made
    is removed again."""
    import torch

    out = tmp_path / "run"
    args = ["--images", str(images), "-o", str(out), "--steps", "1"]
    check_refused([*args, "--precision", "fp16", "--device", "cpu"], "--precision fp16 needs CUDA", out)
    if not torch.cuda.is_available():
        check_refused([*args, "--device", "cuda"], "--device cuda", out, lines=2)
        check_refused([*args, "--precision", "fp16"], "--precision fp16 needs CUDA", out, lines=2)
