"""What a new user meets first: errors naming the right flag, `| head` on any command, help defaults as typed,
one meaning of --resize."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from helpers import ASSETS, assert_one_line_error, invoke
from helpers import LIGHTMATCH as SCRIPT

from lightmatch.cli import main


@pytest.fixture
def no_weights_found(tmp_path, monkeypatch):
    """Only the files shipped in packages are found (an empty cache, no $LIGHTMATCH_WEIGHTS_DIR)."""
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTMATCH_WEIGHTS_DIR", raising=False)


def test_sift_with_default_matcher_names_matcher_weights_and_nn(sample_pair, no_weights_found):
    proc = invoke("match", sample_pair[0], sample_pair[1], "--features", "sift", check_code=None)
    assert_one_line_error(proc, "sift_lightglue", "lightmatch weights download sift_lightglue",
                          "--matcher-weights PATH", "--matcher nn")
    assert not re.search(r"(^|\s)--weights\b", proc.stderr), proc.stderr


def test_missing_matcher_weights_file_names_matcher_weights(sample_pair, tmp_path):
    proc = invoke("match", sample_pair[0], sample_pair[1], "--matcher-weights", tmp_path / "missing.pth",
                  check_code=None)
    assert_one_line_error(proc, "missing.pth", "'--matcher-weights'", "not found")
    assert proc.returncode == 2
    proc = invoke("match", sample_pair[0], sample_pair[1], "--weights", tmp_path / "missing.pth", check_code=None)
    assert_one_line_error(proc, "missing.pth", "'--weights'", "not found")


def test_weights_registry_knows_which_flag():
    from lightmatch.weights import REGISTRY, flag_for

    matchers = {name for name in REGISTRY if flag_for(name) == "--matcher-weights"}
    assert matchers == {"aliked_lightglue", "disk_lightglue", "superpoint_lightglue", "sift_lightglue",
                        "superglue_indoor", "superglue_outdoor", "xfeat_lighterglue"}


@pytest.mark.parametrize("command, reader", [
    ("weights list", "head -1"), ("weights list --json", "head -1"),
    # `true` exits before anything is written: every write fails
    ("weights list", "true"), ("--help", "true"), ("--version", "true"), ("eval pose --help", "true"),
    ("pairs {images}", "head -1"), ("pairs {images}", "true")])
def test_closed_stdout_is_not_an_error(command, reader, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(400):  # a pairs file far larger than a pipe's buffer
        (images / f"{i:03d}.jpg").touch()
    line = f"{shlex.quote(str(SCRIPT))} {command.format(images=images)} | {reader}; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def _all_help_texts() -> dict[str, str]:
    """``--help`` of every command and group, by command path."""
    texts: dict[str, str] = {}

    def visit(command: click.Command, path: list[str]) -> None:
        result = CliRunner().invoke(main, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        texts[" ".join(path) or "lightmatch"] = " ".join(result.output.split())
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                visit(sub, [*path, name])

    visit(main, [])
    return texts


def test_help_shows_defaults_as_typed():
    texts = _all_help_texts()
    assert "[default: 640 480]" in texts["eval pose"]
    assert "[default: 256 512 1024 2048 4096]" in texts["benchmark"]
    as_lists = {path: re.findall(r"\[default: [^\]]*\d,\d[^\]]*\]", text) for path, text in texts.items()}
    assert not any(as_lists.values()), as_lists


def test_resize_is_the_long_side_everywhere():
    """`--resize` is the long side in every command's help; eval homography names its short side apart."""
    texts = _all_help_texts()
    for path in ("match", "extract", "benchmark", "eval pose"):
        assert "long side" in texts[path].split("--resize", 1)[1][:200].lower(), path
    homography = texts["eval homography"]
    assert "--resize-short" in homography and "[default: 480]" in homography
    result = CliRunner().invoke(main, ["eval", "homography", "--synthetic", str(ASSETS), "-o", "x", "--resize", "1",
                                       "--resize-short", "1"])
    assert result.exit_code == 2 and "not both" in result.output


@pytest.mark.parametrize("option, side", [("--resize", "long"), ("--resize-short", "short")])
def test_eval_homography_resize_sides(tmp_path, option, side):
    proc = invoke("eval", "homography", "--synthetic", ASSETS, "--num-pairs", 1, "-o", tmp_path / "out", option, 200,
                  "--features", "sift", "--matcher", "nn", "--max-keypoints", 128, "--json")
    settings = json.loads(proc.stdout)["settings"]
    assert (settings["resize"], settings["side"]) == (200, side)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["match", "--help"], ["reconstruct", "--help"],
                                  ["match", "--no-such-option"], ["weights", "list"]])
def test_help_and_usage_errors_start_without_torch(args):
    """Help, the version, usage errors and the weights list answer before torch is imported (0.2 s instead of
    2 s): torch loads only when a command builds a model or reads a store."""
    code = ("import sys\nfrom lightmatch.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "False", proc.stderr
