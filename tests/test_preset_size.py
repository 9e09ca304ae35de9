"""A preset's image size is an upper bound: an image smaller than it keeps its size (hloc's resize_max); plain
--resize enlarges it, as LightGlue does, unless --no-upsample."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner
from helpers import ASSETS, make_images

from lightmatch.cli import main
from lightmatch.eval.homography import _load_resized
from lightmatch.models import base

FAST = "--features sift --matcher nn --max-keypoints 64 --json"


@pytest.fixture()
def network_sizes(monkeypatch) -> list[tuple[int, int]]:
    """(input long side, network long side) of every image given to an extractor."""
    seen: list[tuple[int, int]] = []
    original = base.resize_for_network

    def spy(image, long_side, upsample=True):
        out = original(image, long_side, upsample)
        seen.append((max(image.shape[-2:]), max(out[0].shape[-2:])))
        return out

    monkeypatch.setattr(base, "resize_for_network", spy)
    return seen


@pytest.mark.parametrize("options, long_side", [
    ("--preset fast", 256),  # the preset's 640 is an upper bound: 256 px images stay at 256
    ("--preset outdoor --resize 200", 200),  # an upper bound still shrinks larger images
    ("--resize 640", 640),  # plain --resize enlarges, as LightGlue's preprocessing
    ("--resize 640 --no-upsample", 256),
    ("--preset fast --upsample", 640),  # what the user gives wins
])
def test_preset_size_is_an_upper_bound(network_sizes, tmp_path, options, long_side):
    make_images(tmp_path, 2)  # 256 x 192
    result = CliRunner().invoke(main, shlex.split(f"match {tmp_path}/img00.png {tmp_path}/img01.png {FAST} "
                                                  f"{options}"))
    assert result.exit_code == 0, result.output
    assert network_sizes == [(256, long_side)] * 2


def test_store_records_a_kept_size(tmp_path):
    make_images(tmp_path, 2)
    result = CliRunner().invoke(main, shlex.split(f"match --image-dir {tmp_path} --pairs-mode exhaustive -q "
                                                  f"-o {tmp_path}/out {FAST} --resize 640 --no-upsample"))
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, shlex.split(f"match --image-dir {tmp_path} --pairs-mode exhaustive -q "
                                                  f"-o {tmp_path}/out {FAST} --resize 640"))
    assert result.exit_code == 2 and "upsample" in result.stderr  # other features: refused


def test_eval_homography_keeps_smaller_images():
    image, size, new = _load_resized(ASSETS / "sample0.jpg", 4096, "long", upsample=False)
    assert new == size and tuple(image.shape[-2:]) == size[::-1]
    _, size, new = _load_resized(ASSETS / "sample0.jpg", 4096, "long")  # glue-factory's protocol enlarges
    assert max(new) == 4096


def test_eval_pose_keeps_smaller_images():
    from lightmatch.eval.pose_data import resize_for_eval

    assert resize_for_eval(640, 480, [1024], upsample=False) == (640, 480)
    assert resize_for_eval(2048, 1536, [1024], upsample=False) == (1024, 768)
    assert resize_for_eval(640, 480, [1024]) == (1024, 768)  # SuperGlue's protocol enlarges
    assert resize_for_eval(320, 240, [640, 480], upsample=False) == (640, 480)  # an exact size stays exact
