"""ONNX export and the onnxruntime backend against our torch models: same weights, same images, same results.

One export (ALIKED at 320 px + LightGlue) serves the module; a trained-like LightGlue (3 layers, perturbed weights,
written by the training export) is exported on its own. The torch-free runner runs in a subprocess where
``import torch`` fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import onnxruntime  # noqa: F401  (the extra is installed in CI: a missing one fails here, never skips)
import pytest
import torch
from click.testing import CliRunner

import lightmatch as lm
from lightmatch.cli import main
from lightmatch.errors import ConfigError
from lightmatch.export.backend import cached_export, onnx_models
from lightmatch.export.onnx import export_onnx
from lightmatch.io import h5
from lightmatch.models.base import resize_for_network
from lightmatch.models.onnx_backend import numpy_features
from lightmatch.runtime.onnx_runner import MANIFEST, OnnxPipeline

REPO = Path(__file__).resolve().parents[1]
RESIZE, KEYPOINTS = 320, 512


@pytest.fixture(scope="module")
def models():
    extractor = lm.load_extractor("aliked", max_keypoints=KEYPOINTS, resize=RESIZE, device="cpu")
    matcher = lm.load_matcher("lightglue", features="aliked", device="cpu")
    return extractor, matcher


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A cache folder holding the export of :func:`models` (as ``--backend onnxruntime`` makes it)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def exported(models, cache):
    extractor, matcher = models
    folder = cached_export(extractor, matcher, root=cache / "onnx")
    return folder, *onnx_models(extractor, matcher, folder)


@pytest.fixture(scope="module")
def features(models, sample_pair):
    extractor = models[0]
    return extractor.extract(lm.load_image(sample_pair[0])), extractor.extract(lm.load_image(sample_pair[1]))


def same_matches(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of equal entries (1 for two empty results, 0 for different lengths)."""
    if a.shape != b.shape:
        return 0.0
    return float((a == b).double().mean()) if len(a) else 1.0


def in_raster_order(keypoints: torch.Tensor, *rest: torch.Tensor) -> list[torch.Tensor]:
    """Keypoints ``(N, 2)`` and their per-point values in row-major order (to compare selections made best first,
    where scores equal up to rounding may come in either order)."""
    order = torch.argsort(keypoints[:, 1] * 1e5 + keypoints[:, 0])
    return [t[order] for t in (keypoints, *rest)]


@pytest.mark.parametrize("threshold,size", [(0.2, RESIZE), (-1.0, RESIZE), (0.2, 257)])
def test_extractor_parity(models, exported, sample_pair, threshold, size):
    """Threshold mode (row-major order) and top-k mode; 257 px needs padding inside the graph."""
    extractor, onnx_extractor = models[0], exported[1]
    image, _ = resize_for_network(lm.load_image(sample_pair[0]), size)
    for model in (extractor, onnx_extractor):
        model.detection_threshold = threshold
    kpts, scores, desc = extractor.detect_and_describe(image)
    okpts, oscores, odesc = onnx_extractor.detect_and_describe(image)
    for model in (extractor, onnx_extractor):
        model.detection_threshold = 0.2
    assert len(kpts) > 100 and okpts.shape == kpts.shape
    assert (okpts - kpts).abs().max() < 1e-3
    assert (oscores - scores).abs().max() < 1e-4
    assert (odesc - desc).abs().max() < 1e-4


@pytest.mark.parametrize("depth,width", [(-1.0, -1.0), (0.95, 0.99)])
def test_matcher_parity(models, exported, features, depth, width):
    matcher, onnx_matcher = models[1], exported[2]
    for model in (matcher, onnx_matcher):
        model.depth_confidence, model.width_confidence = depth, width
    reference, result = matcher.match(*features), onnx_matcher.match(*features)
    assert same_matches(result.matches0, reference.matches0) >= 0.99
    assert result.stop_layer == reference.stop_layer
    assert result.info == reference.info
    assert reference.num_matches > 100
    if depth > 0:
        assert reference.stop_layer < 9 and reference.info["pruned0"] > 0  # adaptivity was exercised
    matcher.depth_confidence, matcher.width_confidence = 0.95, 0.99


@pytest.fixture(scope="module")
def varied_pairs(models, features, sample_pair):
    """Six pairs of four images with different keypoint counts (a crop, a mirror), and one pair with an image
    without keypoints: every batch needs padding."""
    extractor = models[0]
    image1 = lm.load_image(sample_pair[1])
    crop = extractor.extract(image1[:, 40:, 60:])
    mirror = extractor.extract(lm.load_image(sample_pair[0]).flip(-1))
    f0, f1 = features
    empty = lm.Features(f0.keypoints[:0], f0.scores[:0], f0.descriptors[:0], f0.image_size)
    assert len({len(f) for f in (f0, f1, crop, mirror)}) == 4
    return [(f0, f1), (f1, f0), (f0, crop), (crop, f1), (mirror, f0), (empty, f1), (f1, mirror)]


@pytest.mark.parametrize("depth,width", [(-1.0, -1.0), (0.95, 0.99)])
def test_batched_matching(models, exported, varied_pairs, depth, width):
    """`match_many` on the batch graphs (padded, masked, a dynamic batch axis): per pair the matches, stopping layer
    and pruned counts of the one-pair graphs and of torch, with adaptivity exercised differently per pair."""
    matcher, onnx_matcher = models[1], exported[2]
    for model in (matcher, onnx_matcher):
        model.depth_confidence, model.width_confidence = depth, width
    batched = onnx_matcher.match_many(varied_pairs)
    single = [onnx_matcher.match(*pair) for pair in varied_pairs]
    reference = [matcher.match(*pair) for pair in varied_pairs]
    matcher.depth_confidence, matcher.width_confidence = 0.95, 0.99
    for got, one, ref in zip(batched, single, reference):
        assert same_matches(got.matches0, one.matches0) >= 0.99 and same_matches(got.matches0, ref.matches0) >= 0.99
        assert (got.stop_layer, got.info) == (one.stop_layer, one.info) == (ref.stop_layer, ref.info)
        assert torch.allclose(got.scores0, one.scores0, atol=1e-3)
    assert batched[5].stop_layer == 0 and len(batched[5].matches0) == 0
    pipeline = OnnxPipeline(exported[0])  # the torch-free API
    pipeline.matcher.configure(onnx_matcher.matching_settings())
    for got, out in zip(batched, pipeline.match_many([tuple(map(numpy_features, pair)) for pair in varied_pairs])):
        assert np.array_equal(got.matches0.numpy(), out.matches0) and got.stop_layer == out.stop_layer
    if depth > 0:
        assert len({r.stop_layer for r in batched}) > 2  # pairs left the batch at different layers
        assert all(r.info["pruned0"] > 0 for r in batched if len(r.matches0))


def test_matcher_settings_contract(models, exported, features):
    """OnnxMatcher forwards the torch matcher's matching_settings() (no more, no fewer), each one a setting the
    runner states; a copy with other settings (with_settings) matches with them, the original keeps its own."""
    matcher, onnx_matcher = models[1], exported[2]
    assert onnx_matcher.matching_settings() == matcher.matching_settings()
    assert set(onnx_matcher.matching_settings()) == set(onnx_matcher.runner.SETTINGS)
    full = onnx_matcher.with_settings(depth_confidence=-1.0, width_confidence=-1.0)
    assert full.match(*features).stop_layer == 9 and onnx_matcher.match(*features).stop_layer < 9
    with pytest.raises(ConfigError, match="takes no setting sinkhorn_iterations"):
        onnx_matcher.runner.configure({"sinkhorn_iterations": 20})
    extra = matcher.with_settings()
    extra.matching_settings = lambda: {**matcher.matching_settings(), "sinkhorn_iterations": 20}
    with pytest.raises(ConfigError, match="takes no setting sinkhorn_iterations"):
        onnx_models(models[0], extra, exported[0])


def test_trained_matcher_parity(tmp_path, features):
    """A matcher as `lightmatch train` writes it (3 layers, weights moved off the official ones)."""
    from lightmatch.models.lightglue import LightGlue
    from lightmatch.train.loop import TrainConfig, export_matcher

    torch.manual_seed(0)
    official = lm.load_matcher("lightglue", features="aliked", device="cpu")
    depth = {"transformers": 3, "log_assignment": 3, "token_confidence": 2}  # the first layers' keys only
    state = {k: v for k, v in official.state_dict().items()
             if k.split(".")[0] not in depth or int(k.split(".")[1]) < depth[k.split(".")[0]]}
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    trained = LightGlue("aliked", state_dict=state)
    path = tmp_path / "matcher.pth"
    export_matcher(trained, TrainConfig(features="aliked"), path)
    matcher = lm.load_matcher("lightglue", features="aliked", device="cpu", weights=str(path))
    assert len(matcher.transformers) == 3
    extractor = lm.load_extractor("aliked", device="cpu")
    for precision in ("fp32", "fp16"):  # fp16: LightGlue's layers only
        folder = tmp_path / precision
        export_onnx(None, matcher, folder, precision=precision)
        manifest = json.loads((folder / MANIFEST).read_text())
        assert "extractor" not in manifest and manifest["matcher"]["precision"] == precision
        _, onnx_matcher = onnx_models(extractor, matcher, folder)
        for depth, width in ((-1.0, -1.0), (0.95, 0.99)):
            for model in (matcher, onnx_matcher):
                model.depth_confidence, model.width_confidence = depth, width
            reference, result = matcher.match(*features), onnx_matcher.match(*features)
            assert same_matches(result.matches0, reference.matches0) >= 0.99
            if precision == "fp32":
                assert (result.stop_layer, result.info) == (reference.stop_layer, reference.info)


def test_colmap_layout(tmp_path, models, features):
    """`export onnx --layout colmap`: COLMAP 4's input and output names and shapes, the full-depth matches."""
    import onnxruntime as ort

    out = tmp_path / "colmap"
    result = CliRunner().invoke(main, ["export", "onnx", "-o", str(out), "--layout", "colmap", "--no-extractor"])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out / "matcher.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert list(shapes) == ["kpts0", "kpts1", "desc0", "desc1", "image_size0", "image_size1"]
    assert shapes["kpts0"][0] == 1 and shapes["kpts0"][2] == 2 and shapes["image_size0"] == [1, 2]
    assert [o.name for o in session.get_outputs()] == ["matches0", "mscores0"]
    f0, f1 = features
    matches0, mscores0 = session.run(None, {
        "kpts0": f0.keypoints[None].numpy(), "kpts1": f1.keypoints[None].numpy(),
        "desc0": f0.descriptors[None].numpy(), "desc1": f1.descriptors[None].numpy(),
        "image_size0": np.array([f0.image_size], np.float32), "image_size1": np.array([f1.image_size], np.float32)})
    matcher = models[1]
    matcher.depth_confidence, matcher.width_confidence = -1.0, -1.0
    reference = matcher.match(f0, f1)
    matcher.depth_confidence, matcher.width_confidence = 0.95, 0.99
    assert matches0.shape == (len(f0),)
    assert same_matches(torch.from_numpy(matches0), reference.matches0) >= 0.99
    assert np.abs(mscores0 - reference.scores0.numpy()).max() < 1e-4


def test_match_cli_backend(tmp_path, exported, cache, sample_pair, monkeypatch):
    """`match --backend onnxruntime` (the cached export), pair by pair and three pairs per batch (`--batch-pairs`):
    the torch path's matches, and the stores say which backend made them."""
    import cv2

    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(cache))
    images = tmp_path / "images"
    images.mkdir()
    for path in sample_pair[:2]:
        (images / path.name).write_bytes(path.read_bytes())
    cv2.imwrite(str(images / "crop.png"), cv2.imread(str(sample_pair[1]))[40:, 60:])  # another keypoint count
    common = ["--resize", str(RESIZE), "--max-keypoints", str(KEYPOINTS)]
    runs = {}
    for backend, batch in (("torch", "1"), ("onnxruntime", "1"), ("onnxruntime", "3")):
        out = tmp_path / f"{backend}{batch}"
        result = CliRunner().invoke(main, ["match", "--image-dir", str(images), "--pairs-mode", "exhaustive",
                                           "-o", str(out), "--backend", backend, "--batch-pairs", batch, "-q",
                                           *common])
        assert result.exit_code == 0, result.output
        runs[backend + batch] = out

    def read(run: str) -> dict[str, np.ndarray]:
        with h5py.File(runs[run] / "matches.h5") as f:
            backend = json.loads(f.attrs["lightmatch_matcher_settings"]).get("backend")
            assert backend == ("onnxruntime" if run.startswith("onnx") else None)
            if backend:
                assert json.loads(f.attrs["lightmatch_extractor_settings"])["backend"] == "onnxruntime"
            return {key: f[key]["matches0"][()] for key in h5.match_groups(f)}

    torch_matches = read("torch1")
    assert len(torch_matches) == 3
    for run in ("onnxruntime1", "onnxruntime3"):
        onnx_matches = read(run)
        assert set(onnx_matches) == set(torch_matches)
        for key, matches in torch_matches.items():
            assert (onnx_matches[key] == matches).mean() >= 0.99
    assert not list((cache / "onnx").glob(".export-*"))  # no leftover of a partial export


def test_refusals(models, sample_pair):
    """Every extractor and matcher without an export is refused with the reason, before any work."""
    extractor, matcher = models
    sift = lm.load_extractor("sift", device="cpu")
    with pytest.raises(ConfigError, match="OpenCV"):
        onnx_models(sift, matcher)
    with pytest.raises(ConfigError, match="reference NMS"):
        export_onnx(lm.load_extractor("aliked", device="cpu", nms="strict"), None, "/nonexistent/never-made")
    from lightmatch.models.superglue import SuperGlue

    with pytest.raises(ConfigError, match="superglue' has no ONNX export.*Sinkhorn"):
        onnx_models(extractor, SuperGlue(pretrained=False))
    result = CliRunner().invoke(main, ["match", str(sample_pair[0]), str(sample_pair[1]), "--backend", "onnxruntime",
                                       "--features", "sift", "--matcher", "nn"])
    assert result.exit_code == 2 and "OpenCV" in result.output


def test_runner_without_torch(tmp_path, exported, models, sample_pair):
    """scripts/onnx_match.py with `import torch` made to fail: it runs, imports no torch, and finds the torch
    path's matches (its OpenCV resize is kornia's within 3e-5)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{REPO}")
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr
    out = tmp_path / "result.npz"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "onnx_match.py"), str(exported[0]),
                           str(sample_pair[0]), str(sample_pair[1]), "--threads", "1", "--output", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["torch_imported"] is False and summary["matches"] > 100
    result = np.load(out)
    extractor, matcher = models
    f0 = extractor.extract(lm.load_image(sample_pair[0]))
    assert result["keypoints0"].shape == tuple(f0.keypoints.shape)
    assert np.abs(result["keypoints0"] - f0.keypoints.numpy()).max() < 1e-2
    reference = matcher.match(f0, extractor.extract(lm.load_image(sample_pair[1])))
    assert (result["matches0"] == reference.matches0.numpy()).mean() >= 0.98


def test_disk_parity(tmp_path, sample_pair):
    """DISK's graph: kornia's strict maxima in raster order, capped or not, on a size the U-Net pads."""
    extractor = lm.load_extractor("disk", max_keypoints=256, resize=200, device="cpu")
    nn_matcher = lm.load_matcher("nn", device="cpu")
    export_onnx(extractor, nn_matcher, tmp_path)
    onnx_extractor, _ = onnx_models(extractor, nn_matcher, tmp_path)
    image, _ = resize_for_network(lm.load_image(sample_pair[0]), 200)
    for cap in (256, -1):  # capped, and no cap
        extractor.max_keypoints = onnx_extractor.max_keypoints = cap
        (kpts, scores, desc), (okpts, oscores, odesc) = (m.detect_and_describe(image)
                                                         for m in (extractor, onnx_extractor))
        assert len(kpts) >= (256 if cap else 257) and okpts.shape == kpts.shape
        assert (okpts - kpts).abs().max() < 1e-3
        # logits up to ~120 from a deep U-Net (other convolution algorithms): relative, 1 for the small ones
        assert ((oscores - scores).abs() / scores.abs().clamp(min=1)).max() < 5e-3  # measured 2.2e-3
        assert (odesc - desc).abs().max() < 1e-4


def test_superpoint_parity(tmp_path, sample_pair):
    """SuperPoint's graph (random weights in the official layout: Magic Leap's are not shipped) on a size the
    network's stride does not divide: threshold mode (row-major), capped, exact count and every pixel."""
    import kornia
    from helpers import superpoint_checkpoint

    from lightmatch.models.superpoint import SuperPoint

    extractor = SuperPoint(state_dict=superpoint_checkpoint(), resize=251)
    nn_matcher = lm.load_matcher("nn", device="cpu")
    export_onnx(extractor, nn_matcher, tmp_path)
    onnx_extractor, _ = onnx_models(extractor, nn_matcher, tmp_path)
    image, _ = resize_for_network(kornia.color.rgb_to_grayscale(lm.load_image(sample_pair[0])[None])[0], 251)
    for cap, threshold, exact in ((-1, 0.005, None), (300, 0.005, None), (-1, -1.0, 200), (-1, -1.0, None)):
        for model in (extractor, onnx_extractor):
            model.max_keypoints, model.keypoint_threshold, model.exact_keypoints = cap, threshold, exact
        (kpts, scores, desc), (okpts, oscores, odesc) = (m.detect_and_describe(image)
                                                         for m in (extractor, onnx_extractor))
        assert len(kpts) >= 200 and okpts.shape == kpts.shape
        if cap > 0 or exact:  # best first: random weights give scores equal up to rounding, whose order may differ
            assert (oscores[1:] <= oscores[:-1] + 1e-6).all()
            kpts, scores, desc = in_raster_order(kpts, scores, desc)
            okpts, oscores, odesc = in_raster_order(okpts, oscores, odesc)
        assert (okpts - kpts).abs().max() < 1e-3
        assert (oscores - scores).abs().max() < 1e-5
        assert (odesc - desc).abs().max() < 1e-4
    # the exact count of `benchmark`, through extract(): keypoints in original pixels
    (torch_budget, exact), (onnx_budget, _) = (m.with_keypoint_budget(200) for m in (extractor, onnx_extractor))
    f, of = (m.extract(lm.load_image(sample_pair[1])) for m in (torch_budget, onnx_budget))
    assert exact and onnx_budget.settings() == {**torch_budget.settings(), "backend": "onnxruntime"}
    assert len(of) == len(f) == 200
    assert (in_raster_order(of.keypoints)[0] - in_raster_order(f.keypoints)[0]).abs().max() < 1e-3


def test_xfeat_parity(tmp_path, sample_pair):
    """XFeat's graph (the official weights): sizes that are and are not multiples of 32 (resized inside), capped."""
    nn_matcher = lm.load_matcher("nn", device="cpu")
    for cap in (1024, 300):
        extractor = lm.load_extractor("xfeat", max_keypoints=cap, resize=None, device="cpu")
        if cap == 1024:
            export_onnx(extractor, nn_matcher, tmp_path)
        onnx_extractor, _ = onnx_models(extractor, nn_matcher, tmp_path)
        for size in (320, 257):
            image, _ = resize_for_network(lm.load_image(sample_pair[0]), size)
            (kpts, scores, desc), (okpts, oscores, odesc) = (m.detect_and_describe(image)
                                                             for m in (extractor, onnx_extractor))
            assert len(kpts) >= 300 and okpts.shape == kpts.shape
            assert (oscores[1:] <= oscores[:-1]).all()  # best first
            (kpts, scores, desc), (okpts, oscores, odesc) = (in_raster_order(*out) for out in
                                                             ((kpts, scores, desc), (okpts, oscores, odesc)))
            assert (okpts - kpts).abs().max() < 1e-3
            assert (oscores - scores).abs().max() < 1e-4
            assert (odesc - desc).abs().max() < 1e-4


def test_xfeat_lighterglue(tmp_path, sample_pair):
    """XFeat + LighterGlue (our LightGlue with one head, 64-d in, 96-d tokens, 6 layers) exported together: per pair
    and batched, the torch matches, stopping layers and pruned counts, in LighterGlue's own mode (no early exit,
    pruning at 0.95) and with early exit."""
    extractor = lm.load_extractor("xfeat", max_keypoints=512, resize=320, device="cpu")
    matcher = lm.load_matcher("lightglue", features="xfeat", device="cpu")
    assert matcher.name == "lighterglue"
    export_onnx(extractor, matcher, tmp_path)
    onnx_extractor, onnx_matcher = onnx_models(extractor, matcher, tmp_path)
    images = [lm.load_image(p) for p in sample_pair[:2]]
    images.append(images[1][:, 40:, 60:])
    feats = [onnx_extractor.extract(image) for image in images]
    pairs = [(feats[0], feats[1]), (feats[2], feats[0]), (feats[1], feats[2])]
    for depth in (-1.0, 0.95):
        for model in (matcher, onnx_matcher):
            model.depth_confidence = depth
        reference = [matcher.match(*pair) for pair in pairs]
        for results in ([onnx_matcher.match(*pair) for pair in pairs], onnx_matcher.match_many(pairs)):
            for got, ref in zip(results, reference):
                assert same_matches(got.matches0, ref.matches0) >= 0.99
                assert (got.stop_layer, got.info) == (ref.stop_layer, ref.info)
        assert reference[0].num_matches > 50 and reference[0].info["pruned0"] > 0
        assert (reference[0].stop_layer < 6) == (depth > 0)


def test_benchmark_cli_backend(exported, cache, monkeypatch):
    """`benchmark --backend onnxruntime`: torch and ONNX Runtime rows from one run, extraction included."""
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(cache))
    result = CliRunner().invoke(main, ["benchmark", "--backend", "onnxruntime", "--num-keypoints", "256",
                                       "--repeat", "1", "--warmup", "0", "--resize", str(RESIZE), "--json"])
    assert result.exit_code == 0, result.output
    records = {(r["backend"], r["config"]): r for r in json.loads(result.stdout)["records"] if r["pair"] == "sample"}
    assert set(records) == {(b, c) for b in ("torch", "onnxruntime") for c in ("extract", "full", "adaptive")}
    assert all(r["mean_ms"] > 0 for r in records.values())
    assert records["onnxruntime", "full"]["same_matches"] == records["onnxruntime", "adaptive"]["same_matches"] == 1.0
    assert records["onnxruntime", "adaptive"]["stop_layer"] == records["torch", "adaptive"]["stop_layer"]
