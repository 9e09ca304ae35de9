"""A matcher's weights say what they match: ``matcher.json`` beside trained weights, the registry for official files,
the input layer's size otherwise; ``match`` refuses weights made for other features before any image is read."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import ASSETS, make_images

from lightmatch import weights
from lightmatch.cli import main
from lightmatch.errors import WeightsError
from lightmatch.models.factory import check_matcher_weights
from lightmatch.models.lightglue import VARIANTS, LightGlue
from lightmatch.train.loop import TrainConfig, export_matcher

SMALL = "--resize 256 --max-keypoints 256"


def small_lightglue(family: str) -> LightGlue:
    torch.manual_seed(0)
    return LightGlue(replace(VARIANTS[family], n_layers=1), pretrained=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """ALIKED-trained weights as ``lightmatch train`` exports them: matcher.pth + matcher.json."""
    path = tmp_path_factory.mktemp("run") / "matcher.pth"
    export_matcher(small_lightglue("aliked"), TrainConfig(features="aliked"), path)
    assert weights.metadata_path(path).is_file()
    return path


def invoke(args: str):
    return CliRunner().invoke(main, shlex.split(args))


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lightmatch: error:")
    return lines[0]


def test_trained_weights_refuse_other_features(trained, tmp_path):
    make_images(tmp_path, 2)
    result = invoke(f"match {tmp_path}/img00.png {tmp_path}/img01.png --features disk --matcher-weights {trained} "
                    f"{SMALL}")
    assert result.exit_code == 1
    line = error_line(result)
    assert "aliked" in line and "--features disk" in line and "matcher.json" in line
    # the features they were trained on are accepted
    result = invoke(f"match {tmp_path}/img00.png {tmp_path}/img01.png --features aliked --matcher-weights {trained} "
                    f"{SMALL} --json")
    assert result.exit_code == 0, result.output


def _broken_images(folder) -> str:
    """Two files that exist (so the options parse) but are no images: an error about them means they were read."""
    paths = [folder / "missing0.jpg", folder / "missing1.jpg"]
    for path in paths:
        path.write_bytes(b"not an image")
    return " ".join(map(str, paths))


@pytest.mark.parametrize("features", ["disk", "superpoint"])
def test_official_weights_checked_before_any_image(features, tmp_path):
    official = weights.find("aliked_lightglue")
    if official is None:
        pytest.skip("aliked_lightglue.pth not installed")
    copy = tmp_path / "mine.pth"  # an official file under another name, without metadata: known by its digest
    shutil.copyfile(official, copy)
    broken = _broken_images(tmp_path)
    result = invoke(f"match {broken} --features {features} --matcher-weights {copy}")
    assert result.exit_code == 1
    line = error_line(result)
    assert str(copy) in line and "aliked_lightglue" in line and f"--features {features}" in line
    assert "missing0" not in line


def test_own_weights_checked_by_their_input_layer(tmp_path):
    own = tmp_path / "own.pth"  # no metadata, not an official file: the input projection takes 128-d descriptors
    torch.save(small_lightglue("disk").state_dict(), own)
    result = invoke(f"match {_broken_images(tmp_path)} --features superpoint --matcher-weights {own}")
    assert result.exit_code == 1
    line = error_line(result)
    assert "128-d" in line and "256-d" in line and "missing0" not in line
    check_matcher_weights("lightglue", "disk", str(own))  # 128-d features pass
    check_matcher_weights("lightglue", "aliked", str(own))


def test_sift_weights_need_scale_and_orientation(tmp_path):
    own = tmp_path / "sift.pth"
    torch.save(small_lightglue("sift").state_dict(), own)
    with pytest.raises(WeightsError, match="scale and orientation"):
        check_matcher_weights("lightglue", "disk", str(own))
    check_matcher_weights("lightglue", "sift", str(own))


def test_matcher_kind_and_unreadable_metadata(trained, tmp_path):
    with pytest.raises(WeightsError, match="lightglue weights, not superglue"):
        check_matcher_weights("superglue", "superpoint", str(trained))
    copy = tmp_path / "matcher.pth"
    shutil.copyfile(trained, copy)
    weights.metadata_path(copy).write_text("{not json")
    with pytest.raises(WeightsError, match="matcher.json: unreadable metadata"):
        check_matcher_weights("lightglue", "aliked", str(copy))


def test_eval_and_benchmark_check_too(trained):
    """``eval`` and ``benchmark`` build their models through the same loader."""
    for command in (f"eval homography --synthetic {ASSETS} --num-pairs 1", "benchmark --repeat 1 --warmup 0"):
        result = invoke(f"{command} --features disk --matcher-weights {trained}")
        assert result.exit_code == 1, result.output
        assert "matcher.json" in error_line(result)
