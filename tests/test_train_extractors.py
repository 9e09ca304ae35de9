"""Every extractor ``train --help`` lists trains: SuperPoint + SuperGlue with the extractor's weights given by
``--weights`` (an official-layout checkpoint built here), and XFeat with LighterGlue, whose export ``match`` loads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import superpoint_checkpoint

from lightmatch.cli import main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (240, 320), np.uint8), (0, 0), 2)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.roll(base, 7 * i, axis=1))
    return folder


def tiny(images, out, *extra):
    return CliRunner().invoke(main, ["train", "--images", str(images), "-o", str(out), "--steps", "2",
                                     "--batch-size", "2", "--n-layers", "1", "--num-keypoints", "32",
                                     "--patch-size", "128x96", "--val-pairs", "2", "--device", "cpu", "-q", *extra])


def test_superglue_on_superpoint_with_given_weights(images, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path / "nocache"))
    monkeypatch.delenv("LIGHTMATCH_WEIGHTS_DIR", raising=False)
    missing = tiny(images, tmp_path / "none", "--features", "superpoint", "--matcher", "superglue")
    assert missing.exit_code == 1
    last = missing.output.strip().splitlines()[-1]
    assert "superpoint_v1.pth" in last and "--weights" in last and "weights download superpoint" in last, last
    assert not (tmp_path / "none").exists()
    weights = tmp_path / "superpoint_v1.pth"
    torch.save(superpoint_checkpoint(), weights)
    result = tiny(images, tmp_path / "run", "--features", "superpoint", "--matcher", "superglue", "--weights",
                  str(weights))
    assert result.exit_code == 0, result.output
    exported = torch.load(tmp_path / "run" / "matcher.pth", weights_only=True)
    assert "bin_score" in exported and "gnn.layers.1.attn.merge.weight" in exported  # SuperGlue's official layout


def test_xfeat_trains_lighterglue_and_match_loads_the_export(images, tmp_path, sample_pair):
    result = tiny(images, tmp_path / "run", "--features", "xfeat")
    assert result.exit_code == 0, result.output
    exported = torch.load(tmp_path / "run" / "matcher.pth", weights_only=True)
    assert all(k.startswith("matcher.") for k in exported)  # LighterGlue's official layout
    out = CliRunner().invoke(main, ["match", str(sample_pair[0]), str(sample_pair[1]), "--features", "xfeat",
                                    "--max-keypoints", "256", "--resize", "320", "--matcher-weights",
                                    str(tmp_path / "run" / "matcher.pth"), "--json"])
    assert out.exit_code == 0, out.output
    official = tiny(images, tmp_path / "ft", "--features", "xfeat", "--init", "official", "--n-layers", "6",
                    "--steps", "1")
    assert official.exit_code == 0, official.output
