"""Tests of lightmatch.benchmark and `lightmatch benchmark` (that it runs and what it reports, not its speed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lightmatch import benchmark as B
from lightmatch.cli import main
from lightmatch.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"


def _invoke(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_benchmark_cli_defaults_json_and_plot(tmp_path):
    plot = tmp_path / "latency.png"
    payload = json.loads(_invoke(["benchmark", "--num-keypoints", 256, 512, "--repeat", 2, "--warmup", 1,
                                  "--resize", 256, "--plot", plot, "--json"]))
    assert payload["device"] == "cpu" and payload["threads"] == torch.get_num_threads()
    assert (payload["features"], payload["matcher"]) == ("aliked-n16", "lightglue")
    assert [p["name"] for p in payload["pairs"]] == ["sample"]
    records = {(r["config"], r["num_keypoints"]): r for r in payload["records"]}
    assert set(records) == {(c, n) for c in ("full", "adaptive") for n in (256, 512)}
    for (config, n), r in records.items():
        assert r["pair"] == "sample" and (r["keypoints0"], r["keypoints1"]) == (n, n)
        assert len(r["times_ms"]) == 2 and r["mean_ms"] > 0 and 0 < r["matches"] <= n
        assert r["stop_layer"] == 9 if config == "full" else 1 <= r["stop_layer"] <= 9
    assert plot.read_bytes()[:4] == b"\x89PNG" and plot.stat().st_size > 1000


def test_benchmark_cli_json_other_pairs_and_matcher(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["sample0.jpg", "sample1.jpg", "sample0.jpg"]):
        shutil.copy(ASSETS / name, folder / f"{i:02d}.jpg")
    payload = json.loads(_invoke(["benchmark", "--num-keypoints", "128,256", "--repeat", 1, "--warmup", 0,
                                  "--resize", 256, "--pairs-dir", folder, "--matcher", "nn", "--json"]))
    assert [p["name"] for p in payload["pairs"]] == ["sample", "00-01"]  # consecutive sorted images, odd one out
    assert payload["configs"] == {"nn": {}} and payload["repeat"] == 1 and payload["threads"] >= 1
    assert [(r["pair"], r["num_keypoints"]) for r in payload["records"]] == [
        ("sample", 128), ("00-01", 128), ("sample", 256), ("00-01", 256)]
    assert all(r["keypoints0"] == r["num_keypoints"] and len(r["times_ms"]) == 1 for r in payload["records"])
    text = _invoke(["benchmark", "--num-keypoints", 128, "--repeat", 1, "--warmup", 0, "--resize", 256,
                    "--pairs-dir", folder, "--matcher", "nn"])  # without --json: the tables
    assert text.startswith("Running benchmark on device: cpu, ")
    assert "\nsample [ms]" in text and "\n00-01 keypoints" in text


def test_benchmark_pairs(shared_data, tmp_path):
    pairs = B.benchmark_pairs(shared_data / "lightglue_bench")
    assert [p.name for p in pairs] == ["sample", "easy", "difficult"]
    assert (pairs[1].path0.name, pairs[1].path1.name) == ("DSC_0411.JPG", "DSC_0410.JPG")
    assert [p.name for p in B.benchmark_pairs(shared_data / "lightglue_bench", include_sample=False)] == [
        "easy", "difficult"]
    with pytest.raises(InputError, match="not a folder"):
        B.benchmark_pairs(tmp_path / "missing")
    with pytest.raises(InputError, match="at least two images"):
        B.benchmark_pairs(tmp_path)


def test_keypoint_budget_and_configs():
    import lightmatch
    from lightmatch.io.images import load_image

    image = load_image(ASSETS / "sample0.jpg")
    for nms in ("reference", "strict"):
        ex = lightmatch.load_extractor("aliked", max_keypoints=2048, resize=256, device="cpu", nms=nms)
        budgeted, exact = ex.with_keypoint_budget(300)
        assert exact is True and len(budgeted.extract(image)) == 300
    nn = lightmatch.load_matcher("nn", features="aliked", device="cpu")
    assert B.matcher_configs(nn) == {"nn": {}}
    lg = lightmatch.load_matcher("lightglue", features="aliked", device="cpu", depth_confidence=0.9)
    configs = B.matcher_configs(lg)
    assert configs["full"] == {"depth_confidence": -1.0, "width_confidence": -1.0}
    assert configs["adaptive"]["depth_confidence"] == 0.9
    with pytest.raises(ConfigError):
        B.run_benchmark(ex, nn, [0])
    with pytest.raises(ConfigError):
        B.run_benchmark(ex, nn, [16], repeat=0)


def test_run_benchmark_restores_settings():
    import lightmatch

    ex = lightmatch.load_extractor("aliked", max_keypoints=1000, resize=128, device="cpu")
    lg = lightmatch.load_matcher("lightglue", features="aliked", device="cpu")
    pair = B.BenchmarkPair("s", ASSETS / "sample0.jpg", ASSETS / "sample1.jpg")
    report = B.run_benchmark(ex, lg, [64], pairs=[pair], repeat=1, warmup=0)
    assert [r.config for r in report.records] == ["full", "adaptive"]
    assert ex.max_keypoints == 1000 and ex.detection_threshold == 0.2 and ex.net.dkd.top_k == -1
    assert lg.depth_confidence == 0.95 and lg.width_confidence == 0.99
    assert report.series() == {"s full": [report.records[0].mean_ms], "s adaptive": [report.records[1].mean_ms]}
    lines = B.format_benchmark_tables(report).splitlines()  # LightGlue's print_as_table layout
    start = lines.index("s keypoints                   64")
    assert lines[start + 1:start + 4] == ["-" * 32, "sample0.jpg                   64",
                                          "sample1.jpg                   64"]
    assert lines[lines.index("s stop layer                  64") + 2] == f"{'full':24} {9:>7}"
