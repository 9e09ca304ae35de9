"""Tests of the evaluation pipelines: lightmatch.eval.pose, lightmatch.eval.homography and `lightmatch eval`."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import store_contents

from lightmatch.cli import main
from lightmatch.errors import ConfigError, InputError
from lightmatch.eval import pose as P
from lightmatch.eval import pose_data as PD
from lightmatch.eval.homography import format_homography_table

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _subset(shared_data: Path, tmp_path: Path, lines: list[int], rots: tuple[int, int] | None = None) -> Path:
    """A pairs file with some lines of the ScanNet sample (optionally with other rotation fields)."""
    src = (shared_data / "scannet_sample" / "pairs_with_gt.txt").read_text().splitlines()
    out = []
    for i in lines:
        fields = src[i].split()
        if rots is not None:
            fields[2], fields[3] = str(rots[0]), str(rots[1])
        out.append(" ".join(fields))
    path = tmp_path / f"pairs_{'_'.join(map(str, lines))}_{rots}.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def _load_reference_script():
    spec = importlib.util.spec_from_file_location("eval_reference", REPO / "scripts" / "eval_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------------------
# Keypoints and images in the evaluation frame
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_rotate_keypoints_follows_rot90(rot):
    rng = np.random.default_rng(rot)
    image = rng.integers(0, 255, (5, 7), dtype=np.uint8)  # H=5, W=7
    rotated = np.rot90(image, k=rot)
    ys, xs = np.mgrid[0:5, 0:7]
    kpts = np.stack([xs.ravel(), ys.ravel()], -1).astype(float)
    moved = P.rotate_keypoints(kpts, (7, 5), rot).round().astype(int)
    assert np.array_equal(rotated[moved[:, 1], moved[:, 0]], image[ys.ravel(), xs.ravel()])
    assert np.allclose(P.unrotate_keypoints(moved, (7, 5), rot), kpts)


@pytest.mark.parametrize("rot", [1, 2, 3])
def test_rotated_keypoints_agree_with_rotated_intrinsics(rot):
    """A 3D point projected with the adapted calibration lands where the rotated keypoint is."""
    K = np.array([[500.0, 0.0, 310.0], [0.0, 510.0, 235.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, 3] = [0.3, -0.1, 0.05]
    pair = PD.PosePair("a", "b", rot, 0, K, K, T)
    K0, K1, T01 = PD.adapt_pair_to_images(pair, (640, 480), (640, 480), [-1])
    X = np.array([[0.2, -0.3, 3.0], [-1.0, 0.5, 4.0], [0.4, 0.4, 2.0]])
    x = (X @ K.T)[:, :2] / X[:, 2:]
    expected = P.rotate_keypoints(x, (640, 480), rot)
    Xr = X @ PD.rotate_pose_inplane(np.eye(4), rot)[:3, :3].T  # the point in the rotated camera frame
    projected = (Xr @ K0.T)[:, :2] / Xr[:, 2:]
    assert np.allclose(projected, expected, atol=1e-9)
    # and the adapted relative pose moves the rotated camera-0 point to camera 1
    X1 = (T01[:3, :3] @ Xr.T).T + T01[:3, 3]
    assert np.allclose(X1, (T[:3, :3] @ X.T).T + T[:3, 3])


def test_original_eval_roundtrip():
    rng = np.random.default_rng(0)
    kpts = rng.uniform(0, 900, (50, 2))
    for rot in range(4):
        ev = P.original_to_eval(kpts, (1296, 968), [640, 480], rot)
        assert np.allclose(P.eval_to_original(ev, (1296, 968), [640, 480], rot), kpts)
    # hloc convention: centre of the top-left pixel stays a pixel centre
    assert np.allclose(P.original_to_eval([[-0.5, -0.5]], (1280, 960), [640, 480], 0), [[-0.5, -0.5]])
    assert np.allclose(P.original_to_eval([[0.5, 0.5]], (1280, 960), [640, 480], 0), [[0.0, 0.0]])


def test_load_eval_image_resizes_like_superglue_then_rotates(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (97, 131, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image)
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    out, size = P.load_eval_image(path, [64, 48], 0, grayscale=True)
    assert size == (131, 97)
    assert np.array_equal(out, cv2.resize(gray, (64, 48)))  # INTER_LINEAR, SuperGlue's cv2.resize default
    out1, _ = P.load_eval_image(path, [64, 48], 1, grayscale=True)
    assert np.array_equal(out1, np.rot90(out, 1))
    rgb, _ = P.load_eval_image(path, [-1], 3)
    assert rgb.shape == (131, 97, 3) and np.array_equal(rgb, np.rot90(image[..., ::-1], 3))
    area, _ = P.load_eval_image(path, [64, 48], 0, grayscale=True, interpolation="area")
    assert np.array_equal(area, cv2.resize(gray, (64, 48), interpolation=cv2.INTER_AREA))


def test_tables_layout():
    """SuperGlue's table, tabs included, and ours for homographies in the same layout (programs read --json)."""
    summary = {"auc@5": 12.345, "auc@10": 23.4, "auc@20": 45.6, "precision": 78.9, "matching_score": 10.1,
               "num_pairs": 15}
    assert P.format_pose_table(summary) == ("Evaluation Results (mean over 15 pairs):\n"
                                            "AUC@5\t AUC@10\t AUC@20\t Prec\t MScore\t\n"
                                            "12.35\t 23.40\t 45.60\t 78.90\t 10.10\t")
    hsum = {"auc_ransac@1px": 1.0, "auc_ransac@3px": 2.0, "auc_ransac@5px": 3.0, "auc_dlt@1px": 4.0,
            "auc_dlt@3px": 5.0, "auc_dlt@5px": 6.0, "precision": 7.0, "recall": 8.0, "mean_keypoints": 9.0,
            "mean_matches": 10.25, "num_pairs": 2}
    assert format_homography_table(hsum) == (
        "Homography Results (mean over 2 pairs):\n"
        "RANSAC@1px\t RANSAC@3px\t RANSAC@5px\t DLT@1px\t DLT@3px\t DLT@5px\t Prec@3px\t Rec@3px\t Kpts\t Matches\t\n"
        "1.00\t 2.00\t 3.00\t 4.00\t 5.00\t 6.00\t 7.00\t 8.00\t 9.00\t 10.25\t")


def test_evaluate_pose_errors(tmp_path, sample_pair):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("sample0.jpg sample1.jpg 0 0 " + " ".join(["1"] * 34) + "\n")
    with pytest.raises(ConfigError, match="features-h5"):
        P.evaluate_pose(pairs, ASSETS, features_h5=tmp_path / "f.h5")
    with pytest.raises(ConfigError, match="extractor"):
        P.evaluate_pose(pairs, ASSETS)
    with pytest.raises(InputError, match="no such file"):
        P.evaluate_pose(tmp_path / "missing.txt", ASSETS, features_h5="f", matches_h5="m")
    with pytest.raises(InputError, match="no such HDF5"):
        P.evaluate_pose(pairs, ASSETS, features_h5=tmp_path / "f.h5", matches_h5=tmp_path / "m.h5")
    result = CliRunner().invoke(main, ["eval", "pose", str(pairs), str(ASSETS), "--viz"])
    assert result.exit_code == 2 and "--viz needs an output folder" in result.output
    result = CliRunner().invoke(main, ["eval", "pose", str(pairs), str(ASSETS), "--resize", "1", "2", "3"])
    assert result.exit_code == 2  # the third number is an unexpected extra argument


# ---------------------------------------------------------------------------------------------------------------------
# Homography
# ---------------------------------------------------------------------------------------------------------------------


def test_eval_homography_synthetic_cli(tmp_path):
    out = tmp_path / "out"
    result = _invoke(["eval", "homography", "--synthetic", ASSETS, "--num-pairs", 2, "-o", out, "--resize-short", 240,
                      "--max-keypoints", 256, "--seed", 3])
    summary = json.loads((out / "summary.json").read_text())
    assert result.stdout.endswith(format_homography_table(summary) + "\n")  # the table of what summary.json holds
    table = summary
    assert table["num_pairs"] == 2
    for key in ("auc_ransac@1px", "auc_ransac@3px", "auc_ransac@5px", "auc_dlt@5px", "precision", "recall"):
        assert 0.0 <= table[key] <= 100.0
    assert table["auc_ransac@1px"] <= table["auc_ransac@3px"] <= table["auc_ransac@5px"]
    assert 0 < table["mean_keypoints"] <= 256 and table["mean_matches"] > 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["num_keypoints0"] <= 256 for r in records)
    assert summary["settings"]["seed"] == 3
    assert (out / "synthetic" / "pairs.txt").is_file()

    # the synthetic folder is a dataset: evaluate it again (another matcher, JSON output)
    again = _invoke(["eval", "homography", out / "synthetic", "--resize-short", 240, "--max-keypoints", 256,
                     "--matcher", "nn", "--json"])
    payload = json.loads(again.stdout)
    assert payload["num_pairs"] == 2 and payload["settings"]["matcher"] == "nn"


def test_eval_homography_preset(tmp_path):
    """--preset sets the models and the estimation; what the user gives (here the keypoint budget and the short
    side) wins, and the report names the preset."""
    result = _invoke(["eval", "homography", "--synthetic", ASSETS, "--num-pairs", 1, "-o", tmp_path / "out",
                      "--preset", "fast", "--max-keypoints", 200, "--resize-short", 240, "--json"])
    payload = json.loads(result.stdout)
    settings = payload["settings"]
    assert settings["preset"] == "fast" and settings["estimator"] == "poselib" and settings["ransac_thresh"] == 2.0
    assert settings["extractor"] == "aliked-n16" and settings["resize"] == 240 and settings["side"] == "short"
    assert 0 < payload["mean_keypoints"] <= 200
    result = _invoke(["eval", "homography", "--synthetic", ASSETS, "--num-pairs", 1, "-o", tmp_path / "out2",
                      "--preset", "indoor", "--max-keypoints", 200, "--json"])
    settings = json.loads(result.stdout)["settings"]
    assert settings["resize"] == 640 and settings["side"] == "long"  # the preset's long side


def test_eval_homography_usage_errors(tmp_path):
    result = CliRunner().invoke(main, ["eval", "homography"])
    assert result.exit_code == 2 and "DATASET or --synthetic" in result.output
    result = CliRunner().invoke(main, ["eval", "homography", "--synthetic", str(ASSETS)])
    assert result.exit_code == 2 and "output folder" in result.output
    result = CliRunner().invoke(main, ["eval", "homography", str(tmp_path)])
    assert result.exit_code == 1 and "no HPatches sequence folders" in result.output


# ---------------------------------------------------------------------------------------------------------------------
# Relative pose on the ScanNet sample
# ---------------------------------------------------------------------------------------------------------------------


def test_eval_pose_sift_nn_and_stores(shared_data, tmp_path):
    """SIFT + NN through the CLI; the stores it writes evaluate to the same numbers without the models."""
    images = shared_data / "scannet_sample" / "images"
    pairs = _subset(shared_data, tmp_path, [7, 12])
    out = tmp_path / "direct"
    direct = _invoke(["eval", "pose", pairs, images, "--features", "sift", "--matcher", "nn", "--ratio-threshold",
                      0.8, "--max-keypoints", 1024, "-o", out, "--viz", "--json"])
    table = json.loads(direct.stdout)
    assert table["num_pairs"] == 2
    assert all(0.0 <= table[k] <= 100.0 for k in ("auc@5", "auc@10", "auc@20", "precision", "matching_score"))
    assert table["precision"] > 20  # SIFT + ratio test on ScanNet: far from random
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["image0"] for r in records] == [line.split()[0] for line in pairs.read_text().splitlines()]
    assert all(0 < r["num_keypoints0"] <= 1024 for r in records)
    assert len(list((out / "viz").glob("*_evaluation.png"))) == 2
    assert json.loads((out / "summary.json").read_text())["settings"]["resize"] == [640, 480]

    stored = _invoke(["eval", "pose", pairs, images, "--features-h5", out / "features.h5", "--matches-h5",
                      out / "matches.h5", "-o", tmp_path / "stored"])  # the table, printed
    assert stored.stdout.endswith(P.format_pose_table(table) + "\n")
    again = [json.loads(line) for line in (tmp_path / "stored" / "results.jsonl").read_text().splitlines()]
    for a, b in zip(records, again):
        assert a["num_matches"] == b["num_matches"] and a["num_correct"] == b["num_correct"]
        assert a["num_keypoints0"] == b["num_keypoints0"]
        assert abs(a["pose_error"] - b["pose_error"]) < 1e-2  # float32 storage of original-pixel keypoints

    # rotation fields: the same stores seen through rotated images give the same correct matches
    rotated = _invoke(["eval", "pose", _subset(shared_data, tmp_path, [7, 12], rots=(1, 2)), images,
                       "--features-h5", out / "features.h5", "--matches-h5", out / "matches.h5", "--json"])
    payload = json.loads(rotated.stdout)
    assert payload["precision"] == pytest.approx(table["precision"], abs=0.01)
    assert payload["matching_score"] == pytest.approx(table["matching_score"], abs=0.01)


def test_eval_pose_from_match_run(shared_data, tmp_path):
    """Stores of `lightmatch match` (keypoints found at its own resolution, in original pixels) are evaluated; the
    evaluation frame hardly matters for them (the same matches are correct at 640x480 and at full size)."""
    images = shared_data / "scannet_sample" / "images"
    pairs = _subset(shared_data, tmp_path, [12])
    name0, name1 = pairs.read_text().split()[:2]
    _invoke(["match", images / name0, images / name1, "-o", tmp_path / "run", "--features", "sift", "--matcher",
             "nn", "--ratio-threshold", 0.8, "--resize", 800])
    stores = ["--features-h5", tmp_path / "run" / "features.h5", "--matches-h5", tmp_path / "run" / "matches.h5"]
    table = json.loads(_invoke(["eval", "pose", pairs, images, *stores, "--json"]).stdout)
    full = json.loads(_invoke(["eval", "pose", pairs, images, *stores, "--resize", -1, "--json"]).stdout)
    assert table["num_pairs"] == 1 and table["precision"] > 30
    assert abs(table["precision"] - full["precision"]) < 5


def test_eval_pose_rotation_of_images(shared_data, tmp_path):
    """rot fields rotate the images before extraction (and the calibration with them): SIFT, rotation invariant,
    finds as many correct matches as without rotation."""
    images = shared_data / "scannet_sample" / "images"
    import lightmatch

    extractor = lightmatch.load_extractor("sift", max_keypoints=2048, resize=1024, device="cpu")
    matcher = lightmatch.load_matcher("nn", features="sift", ratio_threshold=0.8, device="cpu")
    plain = P.evaluate_pose(_subset(shared_data, tmp_path, [3, 7, 12]), images, extractor, matcher)
    rotated = P.evaluate_pose(_subset(shared_data, tmp_path, [3, 7, 12], rots=(1, 0)), images, extractor, matcher)
    twisted = P.evaluate_pose(_subset(shared_data, tmp_path, [3, 7, 12], rots=(2, 3)), images, extractor, matcher)
    assert plain.summary["precision"] > 40
    for report in (rotated, twisted):
        assert report.summary["precision"] > 40
        assert abs(report.summary["mean_matches"] - plain.summary["mean_matches"]) < 10
    assert extractor.resize == 1024  # switched off during the run only


def test_ours_matches_reference_one_pair(shared_data, tmp_path):
    """ALIKED + LightGlue: ours and the reference (through the same evaluation code) agree on a pair."""
    ref = _load_reference_script()
    import lightmatch

    images = shared_data / "scannet_sample" / "images"
    pairs = _subset(shared_data, tmp_path, [0])
    ours = P.evaluate_pose(pairs, images, lightmatch.load_extractor("aliked", max_keypoints=512, device="cpu"),
                           lightmatch.load_matcher("lightglue", features="aliked", device="cpu"))
    theirs = P.evaluate_pose(pairs, images, ref.ReferenceExtractor("aliked", max_keypoints=512),
                             ref.ReferenceLightGlue("aliked"))
    a, b = ours.pairs[0], theirs.pairs[0]
    assert a["num_keypoints0"] == b["num_keypoints0"] and a["num_keypoints1"] == b["num_keypoints1"]
    assert abs(a["num_matches"] - b["num_matches"]) <= max(2, 0.02 * b["num_matches"])
    assert abs(a["pose_error"] - b["pose_error"]) < 1.0


@pytest.fixture(scope="module")
def scannet_features():
    """scripts/eval_reference.py, loaded once, and our ALIKED of its ALIKED + LightGlue configurations behind one
    extraction cache: the ScanNet sample's images are extracted once for every matcher below."""
    ref = _load_reference_script()
    extractor, _ = ref.CONFIGS["aliked-lg-full"][2]()
    return ref, ref.CachedExtractor(extractor)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["aliked-lg-full", "aliked-lg-adaptive"])
def test_ours_matches_reference_scannet_sample(shared_data, scannet_features, config, tmp_path):
    """The whole ScanNet sample (15 pairs), LightGlue as scripts/eval_reference.py configures it: ours and the
    reference, given the same features, find identical matches on every pair, so the same AUC and precision. The
    extractor's parity with the reference is tested in test_extractors.py, and end to end on a ScanNet pair by
    test_ours_matches_reference_one_pair (the reference ALIKED on all 30 images cost 27 of this test's 35 s)."""
    ref, extractor = scannet_features
    data = shared_data / "scannet_sample"
    reports = {}
    for impl, build in zip(("ours", "reference"), ref.CONFIGS[config][2:]):
        reports[impl] = P.evaluate_pose(data / "pairs_with_gt.txt", data / "images", extractor, build()[1],
                                        resize=(640, 480), seed=0, output_dir=tmp_path / impl)
    ours, theirs = (store_contents(tmp_path / impl / "matches.h5") for impl in ("ours", "reference"))
    pairs = [key for key in ours if key.endswith("/matches0")]
    assert len(pairs) == 15 and pairs == [key for key in theirs if key.endswith("/matches0")]
    for key in pairs:
        assert np.array_equal(ours[key], theirs[key]), f"{key}: {int((ours[key] != theirs[key]).sum())} differ"
    summary, reference = reports["ours"].summary, reports["reference"].summary
    for key in ("auc@5", "auc@10", "auc@20", "precision"):
        assert abs(summary[key] - reference[key]) <= 1e-6, (key, summary[key], reference[key])
    assert summary["num_pairs"] == 15 and summary["mean_matches"] > 10  # measured 28: the comparison is not empty
    assert not math.isnan(summary["auc@20"])
