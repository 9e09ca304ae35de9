"""The batch commands: pairs, extract, match (files, stdin, folders), export colmap, exit codes. In-process (click's
runner), except where processes are the point: a shell pipeline between two console scripts, and two runs at once
on one folder. Small synthetic images, SIFT + nearest neighbour (the model does not matter here)."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner
from helpers import LIGHTMATCH, assert_store_invariant, json_lines, make_images, run_line

from lightmatch.cli import main
from lightmatch.io import h5
from lightmatch.io.pairs import exhaustive_pairs, sequential_pairs

FAST = "--features sift --matcher nn --resize -1 --max-keypoints 200"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("cli_batch")
    return root / "imgs", make_images(root / "imgs", 5)


def test_pairs_command_modes(images, tmp_path):
    image_dir, names = images
    out = run_line(f"pairs {image_dir}", tmp_path)
    assert out.returncode == 0, out.stderr
    assert [tuple(line.split()) for line in out.stdout.splitlines()] == exhaustive_pairs(names)
    out = run_line(f"pairs {image_dir} --mode sequential --window 2 --loop -o p/pairs.txt", tmp_path)
    assert out.returncode == 0 and out.stdout == ""
    lines = (tmp_path / "p/pairs.txt").read_text().splitlines()
    assert [tuple(line.split()) for line in lines] == sequential_pairs(names, 2, loop=True)


def test_stdin_pipeline_resume_export_and_two_image_form(images, tmp_path):
    image_dir, names = images
    match = f"match --image-dir {image_dir} --pairs - -o out {FAST} --verify homography --json"
    pipeline = f"{LIGHTMATCH} pairs {image_dir} | {LIGHTMATCH} {match}"
    out = run_line(pipeline, tmp_path, shell=True)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr  # no progress bar when stderr is not a terminal
    lines = json_lines(out.stdout)
    pairs = [line for line in lines if line["type"] == "pair"]
    assert len(pairs) == 10 and all(p["status"] == "ok" for p in pairs)
    assert all(p["keypoints0"] > 0 and p["matches"] > 0 and 0 < p["inliers"] <= p["matches"] and p["time_ms"] >= 0
               for p in pairs)
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["pairs_matched"] == 10 and summary["images_extracted"] == 5
    assert summary["pairs_per_s"] > 0 and {"decode", "extract", "match", "write"} <= set(summary["time_s"])
    with h5py.File(tmp_path / "out/matches.h5") as handle:
        assert "inliers" in handle[f"{names[0]}/{names[1]}"]

    # the same command again (in-process, the pairs on its stdin): everything is skipped
    out = run_line(match, tmp_path, stdin=run_line(f"pairs {image_dir}", tmp_path).stdout)
    summary = json_lines(out.stdout)[-1]
    assert out.returncode == 0 and summary["pairs_skipped"] == 10 and summary["pairs_matched"] == 0
    assert_store_invariant(tmp_path / "out")

    # export
    result = CliRunner().invoke(main, shlex.split(
        f"export colmap --image-dir {image_dir} --features {tmp_path}/out/features.h5 "
        f"--matches {tmp_path}/out/matches.h5 --database {tmp_path}/out/db.db --json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_verified_pairs"] == 10
    with sqlite3.connect(tmp_path / "out/db.db") as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 5
        assert db.execute("SELECT COUNT(*) FROM two_view_geometries").fetchone()[0] == 10


def test_two_image_form_unchanged(images, tmp_path):
    image_dir, names = images
    result = CliRunner().invoke(main, shlex.split(f"match {image_dir / names[0]} {image_dir / names[1]} {FAST} "
                                                  f"-o {tmp_path}/two --json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["matches"] > 0 and summary["image0"] == names[0]
    with h5py.File(tmp_path / "two/matches.h5") as handle:
        assert f"{names[0]}/{names[1]}" in handle
    assert_store_invariant(tmp_path / "two")


def test_corrupt_image_exit_code_3(images, tmp_path):
    image_dir, names = images
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes((image_dir / name).read_bytes())
    (folder / "broken.jpg").write_bytes((image_dir / names[0]).read_bytes()[:300])
    out = run_line(f"match --image-dir {folder} --pairs-mode exhaustive -o out {FAST} --json", tmp_path)
    assert out.returncode == 3, out.stderr
    assert out.stderr.count("broken.jpg") == 1 + 0  # one warning for the image, none per pair
    assert "Traceback" not in out.stderr and "WARN" not in out.stderr
    lines = json_lines(out.stdout)
    assert [line["image"] for line in lines if line["type"] == "image"] == ["broken.jpg"]
    failed = [line for line in lines if line["type"] == "pair" and line["status"] == "failed"]
    assert len(failed) == 5 and all("broken.jpg" in line["error"] for line in failed)
    summary = lines[-1]
    assert (summary["pairs_matched"], summary["pairs_failed"], summary["images_failed"]) == (10, 5, 1)
    assert list(summary["failed_images"]) == ["broken.jpg"]

    out = run_line(f"extract {folder} -o ext {FAST.replace('--matcher nn', '')} -q", tmp_path)
    assert out.returncode == 3 and out.stdout == "" and "broken.jpg" in out.stderr
    with h5py.File(tmp_path / "ext/features.h5") as handle:
        assert h5.feature_groups(handle) == names
    assert_store_invariant(tmp_path / "out")
    assert_store_invariant(tmp_path / "ext")


def test_usage_and_input_errors(images, tmp_path, monkeypatch):
    """In-process (click's runner): usage errors exit 2, bad input 1, each in one line without a traceback."""
    image_dir, names = images
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.txt").write_text(f"{names[0]} {names[1]}\nlonely\n")
    cases = [  # (arguments, exit code, message)
        (f"match --image-dir {image_dir} -o out", 2, "--pairs FILE"),
        (f"match --image-dir {image_dir} --pairs bad.txt --pairs-mode exhaustive -o out", 2, "--pairs FILE"),
        (f"match --image-dir {image_dir} --pairs-mode exhaustive", 2, "-o OUTDIR"),
        (f"match --image-dir {image_dir} --pairs-mode exhaustive --window 3 -o out", 2, "sequential"),
        (f"pairs {image_dir} --window 2", 2, "--mode sequential"),
        (f"match {image_dir / names[0]} {image_dir / names[1]} --verify homography", 2, "needs --image-dir"),
        (f"match --image-dir {image_dir} --pairs-mode sequential -o out --seed 3", 2, "--seed needs --verify"),
        (f"match --image-dir {image_dir} --pairs bad.txt -o out {FAST}", 1, "bad.txt:2:"),
        (f"match --image-dir {tmp_path / 'nope'} --pairs bad.txt -o out {FAST}", 2, "image folder not found"),
    ]
    runner = CliRunner()
    for args, code, message in cases:
        result = runner.invoke(main, shlex.split(args))
        assert result.exit_code == code and message in result.stderr, (args, result.output)
        assert "Traceback" not in result.output
    # resuming with other extractor settings is refused in one line
    pairs = f"{names[0]} {names[1]}\n"
    result = runner.invoke(main, shlex.split(f"match --image-dir {image_dir} --pairs - -o out {FAST} -q"), input=pairs)
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, shlex.split(f"match --image-dir {image_dir} --pairs - -o out "
                                             f"{FAST.replace('200', '100')}"), input=pairs)
    assert result.exit_code == 2 and "other extractor settings (max_keypoints: stored 200, this run 100)" in \
        result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pair_names_absolute_inside_or_outside_the_image_folder(images, tmp_path):
    """An absolute name inside --image-dir is stored relative to it (so the pair's features are stored too); an
    image of another folder keeps a relative name climbing out of it, absolute or relative in the pairs file; the
    stores never hold an absolute path."""
    image_dir, names = images
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{names[0]} {image_dir / names[1]}\n")
    out = run_line(f"match --image-dir {image_dir} --pairs {pairs} -o out {FAST} --json", tmp_path)
    assert out.returncode == 0, out.stderr
    assert json_lines(out.stdout)[-1]["pairs_matched"] == 1
    assert_store_invariant(tmp_path / "out")
    with h5py.File(tmp_path / "out/features.h5") as handle:
        assert h5.feature_groups(handle) == [names[0], names[1]]
    again = run_line(f"match --image-dir {image_dir} --pairs {pairs} -o out {FAST} --json", tmp_path)
    assert json_lines(again.stdout)[-1]["pairs_skipped"] == 1  # a resume does not redo it
    other = make_images(image_dir.parent / "other", 2, prefix="x")
    pairs.write_text(f"{names[0]} ../other/{other[0]}\n{names[0]} {image_dir.parent / 'other' / other[1]}\n")
    out = run_line(f"match --image-dir {image_dir} --pairs {pairs} -o across {FAST} --json", tmp_path)
    assert out.returncode == 0, out.stderr
    assert [(p["image0"], p["image1"]) for p in json_lines(out.stdout)[:-1]] == [
        (names[0], f"../other/{other[0]}"), (names[0], f"../other/{other[1]}")]
    assert_store_invariant(tmp_path / "across")
    with h5py.File(tmp_path / "across/features.h5") as handle:
        assert h5.feature_groups(handle) == sorted([names[0], f"../other/{other[0]}", f"../other/{other[1]}"])
    result = CliRunner().invoke(main, shlex.split(
        f"export colmap --image-dir {image_dir} --features {tmp_path}/across/features.h5 "
        f"--matches {tmp_path}/across/matches.h5 --database {tmp_path}/across/db.db"))
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "across/db.db") as db:
        stored = sorted(name for (name,) in db.execute("SELECT name FROM images"))
    assert stored == sorted([names[0], f"../other/{other[0]}", f"../other/{other[1]}"])
    assert not any(str(tmp_path) in text for text in (out.stdout, *stored))


def test_concurrent_single_pair_runs_keep_each_others_writes(images, tmp_path):
    """Two single-pair runs into one folder at the same time: the second waits for the first's lock."""
    image_dir, names = images
    runs = [subprocess.Popen([str(LIGHTMATCH), "match", str(image_dir / a), str(image_dir / b), "-o",
                              str(tmp_path / "out"), *shlex.split(FAST)], stderr=subprocess.PIPE, text=True)
            for a, b in ((names[0], names[1]), (names[2], names[3]))]
    for process in runs:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert_store_invariant(tmp_path / "out")
    with h5py.File(tmp_path / "out/features.h5") as handle:
        assert h5.feature_groups(handle) == names[:4]
    with h5py.File(tmp_path / "out/matches.h5") as handle:
        assert sorted(h5.match_groups(handle)) == [f"{names[0]}/{names[1]}", f"{names[2]}/{names[3]}"]


def test_single_pair_json_and_batch_pair_lines_share_their_keys(images, tmp_path):
    image_dir, names = images
    single = json.loads(run_line(f"match {image_dir / names[0]} {image_dir / names[1]} {FAST} --json",
                                 tmp_path).stdout)
    batch = run_line(f"match --image-dir {image_dir} --pairs - -o out {FAST} --json --verify homography", tmp_path,
                     stdin=f"{names[0]} {names[1]}\n")
    lines = json_lines(batch.stdout)
    pair, summary = lines[0], lines[-1]
    assert pair["type"] == single["type"] == "pair" and pair["status"] == single["status"] == "ok"
    assert set(single) == set(pair) - {"inliers"}  # --verify adds the inlier count
    assert {k: single[k] for k in ("image0", "image1", "keypoints0", "keypoints1", "matches")} == \
        {k: pair[k] for k in ("image0", "image1", "keypoints0", "keypoints1", "matches")}
    assert summary["pairs_verified"] == 1 and summary["inliers"] == pair["inliers"] > 0
    assert (summary["extractor"], summary["matcher"]) == ("sift", "nn")
    text = run_line(f"match --image-dir {image_dir} --pairs - -o out2 {FAST} --verify homography", tmp_path,
                    stdin=f"{names[0]} {names[1]}\n").stdout
    assert "model: sift + nn" in text and f"inliers: {pair['inliers']} in 1 verified pairs" in text
    extract = json_lines(run_line(f"extract {image_dir} -o ext --features sift --resize -1 --json", tmp_path).stdout)
    assert set(extract[-1]["time_s"]) == {"decode", "wait", "extract", "write", "consolidate"}


def test_preset_and_estimator_on_match(images, tmp_path):
    """--preset fills in what the user did not give (here the keypoint budget is given); --estimator goes with
    --verify and reaches the store's settings."""
    image_dir, names = images
    out = run_line(f"match --image-dir {image_dir} --pairs - -o out --preset fast --max-keypoints 300 "
                   f"--resize -1 --verify fundamental --json", tmp_path, stdin=f"{names[0]} {names[1]}\n")
    assert out.returncode == 0, out.stderr
    assert json_lines(out.stdout)[-1]["extractor"] == "aliked-n16"  # the preset's features
    with h5py.File(tmp_path / "out/matches.h5") as handle:
        verify = json.loads(handle.attrs["lightmatch_verify"])
        settings = json.loads(handle.attrs["lightmatch_extractor_settings"])
    assert verify["estimator"] == "poselib" and verify["threshold"] == 2.0  # the preset's estimation
    assert settings["max_keypoints"] == 300 and settings["detection_threshold"] == 0.0  # given wins over the preset
    bad = run_line(f"match {image_dir / names[0]} {image_dir / names[1]} --estimator poselib", tmp_path)
    assert bad.returncode == 2 and "--estimator needs --verify" in bad.stderr
