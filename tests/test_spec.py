"""``lightmatch.pipeline.spec.ModelSpec``: the one recipe from settings to models. It round-trips through JSON, it
is what the CLI's options give, its ``load()`` builds the models the CLI runs (the same store attributes), and a
Ray worker built from it (pickled, as Ray sends it) holds the same models."""

from __future__ import annotations

import json
import pickle

import h5py
import pytest
import torch
from click.testing import CliRunner
from helpers import make_images

from lightmatch.cli import main
from lightmatch.cli.common import extractor_spec, model_spec
from lightmatch.errors import ConfigError
from lightmatch.models.factory import load_extractor
from lightmatch.pipeline.match import store_attributes
from lightmatch.pipeline.spec import ModelSpec

SPEC = ModelSpec("aliked", "lightglue", extractor_settings={"max_keypoints": 128, "resize": 256, "upsample": False,
                                                            "detection_threshold": 0.0, "nms": "reference"},
                 matcher_settings={"depth_confidence": -1.0, "filter_threshold": 0.2}, precision="fp32",
                 device="cpu")


def parsed_options(*args: str) -> dict:
    """The parameters ``lightmatch match ARGS`` parses (``model_spec`` reads the model options among them)."""
    with main.commands["match"].make_context("match", list(args)) as ctx:
        return dict(ctx.params)


def test_round_trip_through_json():
    text = json.dumps(SPEC.to_dict())
    assert ModelSpec.from_dict(json.loads(text)) == SPEC
    assert json.loads(text)["extractor_settings"]["resize"] == 256


def test_the_spec_owns_its_settings():
    settings = {"max_keypoints": 64}
    spec = ModelSpec("sift", "nn", extractor_settings=settings)
    settings["max_keypoints"] = 1
    spec.to_dict()["extractor_settings"]["max_keypoints"] = 2
    assert spec.extractor_settings == {"max_keypoints": 64}
    assert ModelSpec("sift", "nn", extractor_settings={"detection_threshold": None}).extractor_settings == {}


def test_bad_specs_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown field.*extractr"):
        ModelSpec.from_dict({"extractr": "aliked"})
    with pytest.raises(ConfigError, match="only DISK"):
        ModelSpec("aliked", backend="openvino")
    with pytest.raises(ConfigError, match="unknown backend"):
        ModelSpec(backend="tensorrt")


def test_cli_options_give_the_spec():
    opts = parsed_options("--features", "aliked", "--max-keypoints", "128", "--resize", "256", "--no-upsample",
                          "--detection-threshold", "0", "--depth-confidence", "-1", "--filter-threshold", "0.2",
                          "--precision", "fp32", "--device", "cpu")
    assert model_spec(opts) == SPEC
    nn = model_spec(parsed_options("--features", "sift", "--matcher", "nn", "--ratio-threshold", "0.8"))
    assert nn.matcher_settings == {"ratio_threshold": 0.8} and nn.extractor_settings["resize"] == 1024
    assert extractor_spec(SPEC).matcher == "nn" and extractor_spec(SPEC).matcher_settings == {}


def test_load_builds_what_the_cli_runs(tmp_path):
    """The store attributes a CLI run writes are those of ``spec.load()``'s models (settings, weights, precision,
    device)."""
    names = make_images(tmp_path, 2)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["match", *(str(tmp_path / name) for name in names), "-o", str(out), "--features",
                                       "aliked", "--max-keypoints", "128", "--resize", "256", "--no-upsample",
                                       "--detection-threshold", "0", "--depth-confidence", "-1",
                                       "--filter-threshold", "0.2", "--precision", "fp32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    extractor, matcher = SPEC.load()
    wanted = store_attributes(extractor, matcher)
    with h5py.File(out / "matches.h5", "r") as f:
        written = dict(f.attrs)
    for key in ("lightmatch_extractor_settings", "lightmatch_matcher_settings"):
        assert json.loads(written[key]) == wanted[key]
    for key in ("lightmatch_matcher_weights", "lightmatch_precision", "lightmatch_device", "lightmatch_matcher"):
        assert written[key] == wanted[key]
    assert wanted["lightmatch_extractor_settings"]["upsample"] is False and extractor.resize == 256
    assert matcher.depth_confidence == -1.0 and matcher.filter_threshold == 0.2


def test_resize_minus_one_is_the_original_size_and_defaults_fill_in():
    extractor, matcher = ModelSpec("xfeat", "nn", extractor_settings={"resize": -1}, device="cpu").load()
    assert extractor.resize is None and extractor.max_keypoints == 4096  # XFeat's own budget
    assert matcher.name == "nn"


def test_ray_worker_builds_from_the_spec(tmp_path):
    """What a Ray worker does with the spec it is sent (pickled), without a cluster: the worker's models are the
    spec's. (tests/test_ray.py runs real workers through the CLI.)"""
    from lightmatch.pipeline.batch import BatchOptions
    from lightmatch.pipeline.ray_executor import Worker, _Config

    spec = ModelSpec("sift", "nn", extractor_settings={"max_keypoints": 64, "resize": 128}, device="cpu")
    config = pickle.loads(pickle.dumps(_Config(spec, str(tmp_path), BatchOptions())))
    worker = Worker(config)
    extractor, matcher = spec.load()
    assert store_attributes(worker.extractor, worker.matcher) == store_attributes(extractor, matcher)
    assert worker.extractor.max_keypoints == 64 and worker.extractor.resize == 128


def test_overrides_return_new_models():
    """Settings change by new configurations: the loaded model is never changed."""
    extractor = load_extractor("sift", max_keypoints=64, resize=128, device="cpu", upsample=False)
    assert extractor.upsample is False and extractor.settings()["upsample"] is False
    other = extractor.with_settings(resize=None, upsample=True)
    assert (extractor.resize, extractor.upsample) == (128, False) and (other.resize, other.upsample) == (None, True)
    with pytest.raises(ConfigError, match="no setting nms"):
        extractor.with_settings(nms="strict")
    settings = extractor.settings()
    settings["max_keypoints"] = 1
    assert extractor.settings()["max_keypoints"] == 64
    budget, _ = extractor.with_keypoint_budget(8)
    budget.register_buffer("probe", torch.zeros(1))  # the copy's registries are its own
    assert "probe" not in dict(extractor.named_buffers())
