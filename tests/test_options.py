"""Every option of every command (``train`` aside) is checked before any work starts: an out-of-range, non-finite,
mistyped or missing value is a usage error (exit 2), one line naming the option and what it accepts, with no
traceback, no model loaded and no output folder created.

The table is built from the commands themselves: each bad value below is tried on every command that has the
option, so a new command sharing an option set is covered too, and an option with no entry fails
:func:`test_every_option_is_in_the_table`.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lightmatch.cli import main

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MISSING = "/nonexistent/lightmatch-test"
HUGE = str(10 ** 12)

# option -> bad values; {dir} and {file} name an existing folder and file
BAD: dict[str, list[str]] = {
    # extractor options
    "--max-keypoints": ["0", "-2", "abc", "1.5", "nan"],
    "--resize": ["0", "-2", "99999", "nan", "abc"],
    "--detection-threshold": ["-1", "nan", "inf", "abc"],
    "--aliked-nms": ["loose"],
    "--weights": [MISSING, "{dir}"],
    "--device": ["gpu", "cuda:x", "cuda:64", ""],
    "--backend": ["tensorrt"],
    "--features": ["orb", "ALIKED", ""],
    # matcher options
    "--matcher": ["orb"],
    "--depth-confidence": ["0", "1.5", "-2", "nan"],
    "--width-confidence": ["2", "inf", "abc"],
    "--filter-threshold": ["-0.1", "1.5", "nan"],
    "--precision": ["fp8"],
    "--sinkhorn-iterations": ["0", "-1", "abc"],
    "--superglue-weights": ["both"],
    "--ratio-threshold": ["0", "1.5", "nan"],
    "--distance-threshold": ["0", "-1", "nan", "inf"],
    "--matcher-weights": [MISSING, "{dir}"],
    "--preset": ["slow"],
    # batch options
    "--workers": ["0", "65", HUGE],
    "--executor": ["dask"],
    "--ray-workers": ["0", HUGE],
    "--worker-gpus": ["-1", "nan", "inf"],
    # match
    "--image-dir": [MISSING, "{file}"],
    "--pairs": [MISSING, "{dir}"],
    "--pairs-mode": ["random"],
    "--window": ["0", "-1", "abc"],
    "--verify": ["affine"],
    "--verify-threshold": ["0", "-1", "nan", "inf"],
    "--verify-confidence": ["0", "1", "1.5", "nan"],
    "--seed": ["-1", str(2 ** 31), "abc", "1.5"],
    "--estimator": ["ransac2"],
    "--batch-pairs": ["0", "65", HUGE],
    "--viz": ["{out}/plot.txt", "{dir}"],
    "--viz-max-matches": ["-2", "abc"],
    "--homography": [MISSING, "{dir}"],
    "--mode": ["random"],
    # export colmap
    "--features@export": [MISSING, "{dir}"],
    "--matches": [MISSING, "{dir}"],
    "--database": ["{dir}"],
    "--camera-model": ["FISHEYE"],
    # retrieval and reconstruct
    "--num-matched": ["0", "-1", "abc", HUGE],
    "--retrieval": ["0", "abc", HUGE],
    "--global-features": [MISSING, "{dir}"],
    "--codebook": ["{dir}"],
    "--store": ["{file}"],
    "--search": ["approximate"],
    "--mapper": ["hierarchical"],
    # export onnx
    "--layout": ["flat", ""],
    # eval
    "--interpolation": ["cubic"],
    "--ransac-threshold": ["0", "-1", "nan", "inf", "abc"],
    "--colmap-model": [MISSING, "{file}"],
    "--num-pairs": ["0", "-5", "abc"],
    "--min-covisibility": ["-0.1", "1.5", "nan"],
    "--features-h5": [MISSING, "{dir}"],
    "--matches-h5": [MISSING, "{dir}"],
    "--synthetic": [MISSING, "{file}"],
    "--resize-short": ["0", "-2", "99999", "abc"],
    # benchmark
    "--num-keypoints": ["0", "-5", "abc", str(10 ** 7)],
    "--repeat": ["0", "-1", HUGE],
    "--warmup": ["-1", HUGE],
    "--threads": ["0", "-1", HUGE],
    "--pairs-dir": [MISSING, "{file}"],
    "--plot": ["{out}/latency.txt", "{dir}"],
    # weights download
    "--sha256": ["xyz", "a" * 63, "g" * 64],
    "--url": ["ftp://127.0.0.1/x.pth", "file:///tmp/x.pth", "x.pth"],
}
EXTRA = {  # command-specific values of options that mean something else elsewhere
    ("eval pose", "--resize"): ["0", "640 0", "640 480 320", "99999", "abc", "-5"],
    ("eval homography", "--num-pairs"): ["0", "-5", str(10 ** 6)],
    ("export onnx", "--precision"): ["fp8", "bf16"],
}
ARGUMENTS = {  # positional arguments that must exist: (command, bad arguments, name in the message)
    "match": [([MISSING + ".jpg", "{file}"], "IMAGES"), (["{dir}", "{file}"], "IMAGES")],
    "pairs": [([MISSING], "IMAGE_DIR"), (["{file}"], "IMAGE_DIR")],
    "extract": [([MISSING, "-o", "{out}"], "IMAGE_DIR")],
    "reconstruct": [([MISSING, "-o", "{out}"], "IMAGE_DIR")],
    "eval pose": [([MISSING, "{dir}"], "PAIRS_FILE"), (["{file}", MISSING], "IMAGE_DIR"),
                  (["{file}", "{file}"], "IMAGE_DIR")],
    "eval homography": [([MISSING], "DATASET")],
    "weights download": [(["superpont"], "NAMES")],
    "store info": [([MISSING], "FOLDER"), (["{file}"], "FOLDER")],
    "store check": [([MISSING], "FOLDER")],
    "store compact": [([MISSING, "-o", "{out}"], "FOLDER")],
}
NOT_CHECKED = {"--json", "--loop", "--overwrite", "-q", "--quiet", "--compile", "--rotation-search", "--viz-dir",
               "--ray-address", "-o", "--output", "--all-scenes", "--single-camera", "--force", "--trust-unverified",
               "--help", "-h",  # flags, and places that are created (or, --ray-address, connected to) when used
               "--query-dir", "--db-dir"}  # folders under the image folder: the command checks them before any work


def _commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if name != "train":
                    walk(sub, f"{path} {name}".strip())
        else:
            found[path] = cmd
    walk(main, "")
    return found


def _base(command: str, out: Path, folder: Path, file: Path) -> list[str]:
    """Valid arguments of ``command``, every output under ``out``."""
    return {
        "match": ["match", str(ASSETS / "sample0.jpg"), str(ASSETS / "sample1.jpg"), "-o", str(out)],
        "pairs": ["pairs", str(folder), "-o", str(out / "pairs.txt")],
        "extract": ["extract", str(folder), "-o", str(out)],
        "export colmap": ["export", "colmap", "--image-dir", str(folder), "--features", str(file), "--matches",
                          str(file), "--database", str(out / "db.db")],
        "export onnx": ["export", "onnx", "-o", str(out / "onnx")],
        "reconstruct": ["reconstruct", str(folder), "-o", str(out)],
        "eval pose": ["eval", "pose", str(file), str(folder), "-o", str(out)],
        "eval homography": ["eval", "homography", "--synthetic", str(folder), "-o", str(out)],
        "benchmark": ["benchmark", "--plot", str(out / "latency.png")],
        "weights list": ["weights", "list"],
        "weights download": ["weights", "download", "xfeat"],
    }[command]


def _cases() -> list[tuple[str, str, list[str]]]:
    cases = []
    for command, cmd in _commands().items():
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.is_flag:
                continue
            name = max(param.opts, key=len)
            key = f"{name}@export" if command == "export colmap" and name == "--features" else name
            for value in EXTRA.get((command, name), BAD.get(key, [])):
                cases.append((command, name, [name, value]))
        for args, name in ARGUMENTS.get(command, []):
            cases.append((command, name, args))
    return cases


CASES = _cases()


@pytest.fixture
def places(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    """(output folder that must never appear, an existing folder, an existing file); loading a model fails."""
    from lightmatch.models import factory

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(factory, "load_extractor", no_model)
    monkeypatch.setattr(factory, "load_matcher", no_model)
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path / "out" / "cache"))
    folder = tmp_path / "dir"
    folder.mkdir()
    file = tmp_path / "file.txt"
    file.write_text("x\n")
    return tmp_path / "out", folder, file


@pytest.mark.parametrize("command, name, args", CASES, ids=[f"{c}:{' '.join(a)}" for c, _, a in CASES])
def test_bad_value_is_a_usage_error_before_any_work(places, command: str, name: str, args: list[str]) -> None:
    out, folder, file = places
    args = [a.format(dir=folder, file=file, out=out) for a in args]
    if name.startswith("-"):
        args = _base(command, out, folder, file) + args
    else:  # a positional argument: the command's words, then the arguments as given
        args = command.split() + args
    result = CliRunner().invoke(main, args)
    output = result.output.strip()
    assert result.exit_code == 2, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightmatch: error:") and "Traceback" not in output, output
    assert any(form in lines[0] for form in (f"'{name}'", f"'{name}...'", f"'[{name}]", f"{name} ")), lines[0]
    assert not out.exists()


def test_every_option_is_in_the_table() -> None:
    """A new option needs bad values in this table (or a reason to be left out in NOT_CHECKED)."""
    tried = {name for _, name, _ in CASES}
    for command, cmd in _commands().items():
        for param in cmd.params:
            if isinstance(param, click.Option):
                name = max(param.opts, key=len)
                if name not in NOT_CHECKED and not param.is_flag:
                    assert name in tried, f"{command} {name}"


def test_semantic_limits_are_usage_errors(places) -> None:
    """Limits that depend on the machine: more Ray workers than it can run."""
    pytest.importorskip("ray")
    out, folder, _ = places
    result = CliRunner().invoke(main, ["match", "--image-dir", str(folder), "--pairs-mode", "exhaustive", "-o",
                                       str(out), "--executor", "ray", "--ray-workers", "1000"])
    assert result.exit_code == 2 and "--ray-workers 1000: this machine has" in result.output, result.output
    assert not out.exists()
