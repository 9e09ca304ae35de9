"""`lightmatch match` on one pair: outputs, JSON, and every bad input, in-process (click's runner); the installed
console script itself once."""

from __future__ import annotations

import json
import re
import shutil

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error, assert_store_invariant, invoke, run

from lightmatch.io import h5

FAST = ["--resize", "320", "--max-keypoints", "256"]


def test_console_script_help():
    out = run("--help").stdout
    assert "match" in out and "hloc" in out
    assert "--depth-confidence" in invoke("match", "--help").stdout


def test_match_sample_writes_hloc_stores_and_plot(sample_pair, tmp_path):
    img0, img1, H = sample_pair
    proc = invoke("match", img0, img1, "-o", tmp_path / "out", "--viz", tmp_path / "out" / "m.png",
               "--homography", H, "--json", *FAST)
    summary = json.loads(proc.stdout)
    assert summary["image0"] == "sample0.jpg" and summary["keypoints0"] == 256
    assert summary["matches"] > 50 and summary["correct"] >= 0.9 * summary["matches"]
    assert set(summary["timings_ms"]) >= {"decode", "extract", "match", "write"}
    feats = h5.read_features(tmp_path / "out" / "features.h5", "sample0.jpg")
    assert len(feats) == 256 and feats.image_size == (512, 512)
    pairs, _ = h5.read_matches(tmp_path / "out" / "matches.h5", "sample0.jpg", "sample1.jpg")
    assert len(pairs) == summary["matches"]
    assert_store_invariant(tmp_path / "out")
    assert cv2.imread(str(tmp_path / "out" / "m.png")) is not None


def test_text_output_with_the_defaults(sample_pair):
    """What a user gets without options: ALIKED (long side 1024, up to 2048 keypoints) and adaptive LightGlue."""
    out = invoke("match", sample_pair[0], sample_pair[1]).stdout
    assert out.startswith("aliked-n16 + lightglue\n") and re.search(r"stopped at layer \d of 9", out)
    keypoints = re.search(r"sample0\.jpg: (\d+) keypoints", out)
    assert keypoints and 256 < int(keypoints.group(1)) <= 2048 and "matches:" in out


@pytest.fixture
def bad_files(tmp_path):
    files = {"missing": tmp_path / "nope.jpg"}
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.png"
    files["text"].write_text("this is not an image")
    good = cv2.imencode(".jpg", (np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8))[1]
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(good.tobytes()[:200])
    files["tiny"] = tmp_path / "tiny.png"
    cv2.imwrite(str(files["tiny"]), np.zeros((20, 40), np.uint8))
    # complete header and end marker, damaged pixel data: passes the header check, fails the decode in the run
    png = bytearray(cv2.imencode(".png", (np.random.default_rng(1).random((200, 200, 3)) * 255).astype(np.uint8))[1])
    png[len(png) // 2:len(png) // 2 + 300] = bytes(300)
    files["corrupt"] = tmp_path / "corrupt.png"
    files["corrupt"].write_bytes(bytes(png))
    return files


@pytest.mark.parametrize("kind, message", [("missing", "no such file"), ("empty", "empty file"),
                                           ("text", "not a readable image"), ("truncated", "not a readable image"),
                                           ("tiny", "smaller than the minimum 32 px"),
                                           ("corrupt", "not a readable image")])
def test_bad_image_is_one_line_error(bad_files, sample_pair, kind, message):
    proc = invoke("match", sample_pair[0], bad_files[kind], check_code=None)
    assert_one_line_error(proc, str(bad_files[kind]), message)


def test_unwritable_output_dir(sample_pair, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = invoke("match", sample_pair[0], sample_pair[1], "-o", blocker / "out", check_code=None)
    assert_one_line_error(proc, str(blocker / "out"), "cannot write")


def test_corrupt_weights_file(sample_pair, tmp_path):
    bad = tmp_path / "aliked.pth"
    bad.write_bytes(b"\x00garbage" * 100)
    proc = invoke("match", sample_pair[0], sample_pair[1], "--weights", bad, check_code=None)
    assert_one_line_error(proc, str(bad), "cannot read weights")


def test_missing_weights_file_names_where_to_look(sample_pair, tmp_path):
    proc = invoke("match", sample_pair[0], sample_pair[1], "--weights", tmp_path / "none.pth", check_code=None)
    assert_one_line_error(proc, "none.pth", "not found")


def test_usage_errors_exit_2(sample_pair):
    assert invoke("match", sample_pair[0], check_code=None).returncode == 2
    assert invoke("match", sample_pair[0], sample_pair[1], "--features", "orb", check_code=None).returncode == 2


def test_failed_run_never_truncates_existing_outputs(sample_pair, bad_files, tmp_path):
    out = tmp_path / "out"
    invoke("match", sample_pair[0], sample_pair[1], "-o", out, *FAST)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    names = sorted(p.name for p in out.iterdir())
    for bad in ("truncated", "corrupt"):  # refused before the run / failing inside it: no lock or parts left
        invoke("match", sample_pair[0], bad_files[bad], "-o", out, *FAST, check_code=1)
        assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert sorted(p.name for p in out.iterdir()) == names


def test_featureless_image_warns_and_writes_empty_arrays(sample_pair, tmp_path):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160), 128, np.uint8))
    proc = invoke("match", blank, sample_pair[0], "-o", tmp_path / "out", "--features", "sift", "--matcher", "nn",
               "--json")
    assert "warning" in proc.stderr and "no keypoints" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["keypoints0"] == 0 and summary["matches"] == 0
    feats = h5.read_features(tmp_path / "out" / "features.h5", summary["image0"])
    assert len(feats) == 0 and summary["image0"].endswith("blank.png")


def test_grayscale_16bit_rgba_and_exif_inputs(sample_pair, tmp_path):
    image = cv2.imread(str(sample_pair[0]))
    gray16 = tmp_path / "gray16.png"
    cv2.imwrite(str(gray16), (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    summary = json.loads(invoke("match", gray16, rgba, "--json", *FAST).stdout)
    assert summary["matches"] > 100  # same picture: most keypoints match


def test_names_are_relative_to_common_folder(sample_pair, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(sample_pair[0], tmp_path / "a" / "img.jpg")
    shutil.copy(sample_pair[1], tmp_path / "b" / "img.jpg")
    summary = json.loads(invoke("match", tmp_path / "a" / "img.jpg", tmp_path / "b" / "img.jpg", "--json",
                             "-o", tmp_path / "out", *FAST).stdout)
    assert (summary["image0"], summary["image1"]) == ("a/img.jpg", "b/img.jpg")
    assert sorted(h5.stored_image_names(tmp_path / "out" / "features.h5")) == ["a/img.jpg", "b/img.jpg"]


@pytest.mark.parametrize("option, value, allowed", [
    ("--resize", "0", ">= 1, or -1"), ("--resize", "-7", ">= 1, or -1"),
    ("--max-keypoints", "0", ">= 1, or -1"), ("--max-keypoints", "-5", ">= 1, or -1"),
    ("--depth-confidence", "2", "(0, 1], or -1"), ("--width-confidence", "5", "(0, 1], or -1"),
    ("--filter-threshold", "nan", "finite"), ("--filter-threshold", "1.5", "[0, 1]"),
    ("--sinkhorn-iterations", "0", "x>=1"),
])
def test_out_of_range_options_are_usage_errors(sample_pair, option, value, allowed):
    """Checked when parsing, before any model loads: one line naming the option and its range, exit code 2."""
    proc = invoke("match", sample_pair[0], sample_pair[1], option, value, check_code=2)
    assert_one_line_error(proc, option, allowed)


def test_library_refuses_a_zero_resize():
    from lightmatch.errors import ConfigError
    from lightmatch.models.factory import load_extractor

    with pytest.raises(ConfigError, match="resize must be"):
        load_extractor("sift", resize=0)
    with pytest.raises(ConfigError, match="max_keypoints must be"):
        load_extractor("sift", max_keypoints=0)


def test_viz_max_matches_needs_a_plot(sample_pair):
    proc = invoke("match", sample_pair[0], sample_pair[1], "--viz-max-matches", "10", check_code=2)
    assert_one_line_error(proc, "--viz-max-matches needs --viz")
