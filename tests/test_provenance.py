"""A store records what made it: the matcher's weights (registry name or sha256), the precision run and the device;
a run with other weights into the same folder is refused, and a store written before these were recorded resumes."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import h5py
import pytest
import torch
from click.testing import CliRunner
from helpers import make_images

from lightmatch import weights
from lightmatch.cli import main
from lightmatch.models.lightglue import VARIANTS, LightGlue
from lightmatch.train.loop import TrainConfig, export_matcher

SMALL = "--resize 256 --max-keypoints 128"


def invoke(args: str):
    return CliRunner().invoke(main, shlex.split(args))


def attrs(path: Path) -> dict:
    with h5py.File(path, "r") as handle:
        return dict(handle.attrs)


def trained_weights(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path = folder / f"run{seed}" / "matcher.pth"
    export_matcher(LightGlue(replace(VARIANTS["aliked"], n_layers=1), pretrained=False),
                   TrainConfig(features="aliked"), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("provenance")
    make_images(folder, 2)
    return folder


def test_other_weights_into_the_same_folder_are_refused(images, tmp_path):
    first, second = trained_weights(tmp_path, 0), trained_weights(tmp_path, 1)
    pair = f"{images}/img00.png {images}/img01.png"
    result = invoke(f"match {pair} -o {tmp_path}/out --matcher-weights {first} {SMALL}")
    assert result.exit_code == 0, result.output
    stored = attrs(tmp_path / "out/matches.h5")
    assert stored["lightmatch_matcher_weights"] == f"sha256:{weights.sha256_of(first)}"
    assert stored["lightmatch_precision"] == "fp32" and stored["lightmatch_device"] == "cpu"
    features = attrs(tmp_path / "out/features.h5")
    assert features["lightmatch_precision"] == "fp32" and features["lightmatch_device"] == "cpu"

    result = invoke(f"match {pair} -o {tmp_path}/out --matcher-weights {second} {SMALL}")
    assert result.exit_code == 2
    assert "matcher_weights" in result.stderr and weights.sha256_of(second)[:12] in result.stderr
    result = invoke(f"match {pair} -o {tmp_path}/out {SMALL}")  # the official weights are other weights too
    assert result.exit_code == 2 and "aliked_lightglue" in result.stderr
    result = invoke(f"match {pair} -o {tmp_path}/out --matcher-weights {second} {SMALL} --overwrite")
    assert result.exit_code == 0, result.output
    assert attrs(tmp_path / "out/matches.h5")["lightmatch_matcher_weights"] == f"sha256:{weights.sha256_of(second)}"


def test_official_weights_recorded_by_name_and_nn_as_none(images, tmp_path):
    pair = f"{images}/img00.png {images}/img01.png"
    assert invoke(f"match {pair} -o {tmp_path}/lg {SMALL}").exit_code == 0
    assert attrs(tmp_path / "lg/matches.h5")["lightmatch_matcher_weights"] == "aliked_lightglue"
    batch = f"--image-dir {images} --pairs-mode exhaustive --features sift --matcher nn {SMALL} -q"
    assert invoke(f"match {batch} -o {tmp_path}/nn").exit_code == 0
    assert attrs(tmp_path / "nn/matches.h5")["lightmatch_matcher_weights"] == "none"


def test_store_written_before_the_records_resumes(images, tmp_path):
    batch = f"match --image-dir {images} --pairs-mode exhaustive --features sift --matcher nn {SMALL} -q -o {tmp_path}"
    assert invoke(batch).exit_code == 0
    for name in ("features.h5", "matches.h5"):  # as an older lightmatch wrote them
        with h5py.File(tmp_path / name, "a") as handle:
            for key in ("lightmatch_matcher_weights", "lightmatch_precision", "lightmatch_device"):
                if key in handle.attrs:
                    del handle.attrs[key]
    result = invoke(batch + " --json")
    assert result.exit_code == 0, result.output
    # a setting recorded all along still counts
    result = invoke(batch.replace("--max-keypoints 128", "--max-keypoints 100"))
    assert result.exit_code == 2 and "max_keypoints" in result.stderr


def test_ray_driver_records_the_workers_device(tmp_path):
    """A CPU driver with GPU workers checks the store against what the workers run: CUDA, LightGlue's auto
    precision resolved there (fp16)."""
    from lightmatch.io.store import OutputStore
    from lightmatch.models.factory import load_extractor, load_matcher
    from lightmatch.pipeline.batch import BatchOptions, LocalExecutor, MatchRun
    from lightmatch.pipeline.match import store_attributes
    from lightmatch.pipeline.ray_executor import RayExecutor, RayOptions
    from lightmatch.pipeline.spec import ModelSpec

    pytest.importorskip("ray")
    extractor = load_extractor("sift", max_keypoints=64, device="cpu")
    matcher = load_matcher("lightglue", features="aliked", device="cpu")
    store = OutputStore(tmp_path, store_attributes(extractor), store_attributes(extractor, matcher))
    assert store.match_attrs["lightmatch_precision"] == "fp32" and store.match_attrs["lightmatch_device"] == "cpu"
    run = MatchRun.prepare(tmp_path, [], tmp_path, extractor, matcher, BatchOptions(), LocalExecutor())
    assert run.store.match_attrs == store.match_attrs
    store = MatchRun.prepare(tmp_path, [], tmp_path, extractor, matcher, BatchOptions(),
                             RayExecutor(ModelSpec("sift", "lightglue"), RayOptions(gpus=1.0))).store
    assert store.match_attrs["lightmatch_precision"] == "fp16" and store.match_attrs["lightmatch_device"] == "cuda"
    assert store.feature_attrs["lightmatch_precision"] == "fp32"  # extractors run fp32 unless asked
    assert store.feature_attrs["lightmatch_device"] == "cuda"
