"""Rotation search says what it chose: the turn per pair in text and JSON, and counts (keypoints, matching score,
recall) over the keypoints of that turn only, not the four turns the stores hold."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightmatch.cli import main
from lightmatch.eval.homography import evaluate_homography
from lightmatch.io.images import read_image
from lightmatch.models.factory import load_extractor, load_matcher
from lightmatch.pipeline.rotation import QUARTER_TURN_RAD, chosen_turn, with_rotation_search
from lightmatch.types import Features, Matches

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SMALL = "--resize 320 --max-keypoints 128"


def four_turns(counts: list[int]) -> Features:
    """A feature set with ``counts[k]`` keypoints found at turn ``k`` (keypoint i at (i, 2i))."""
    n = sum(counts)
    kpts = torch.stack([torch.arange(n, dtype=torch.float32), 2 * torch.arange(n, dtype=torch.float32)], 1)
    oris = torch.cat([torch.full((c,), k * QUARTER_TURN_RAD) for k, c in enumerate(counts)])
    return Features(kpts, torch.rand(n), torch.randn(n, 8), (100, 80), None, oris)


def test_chosen_turn_keeps_the_compared_keypoints_and_reindexes_matches():
    f0, f1 = four_turns([3, 2, 2, 2]), four_turns([1, 4, 2, 1])
    matches0 = torch.full((9,), -1, dtype=torch.long)
    matches0[0], matches0[2] = 3, 1  # image 1's keypoints 1-4 are its turn-1 ones
    scores0 = torch.where(matches0 > -1, 0.9, 0.0)
    c0, c1, m = chosen_turn(f0, f1, Matches(matches0, scores0, 0, {"turns": 1}))
    assert len(c0) == 3 and len(c1) == 4
    assert m.matches0.tolist() == [2, -1, 0]
    assert torch.equal(c1.keypoints, f1.keypoints[1:5])  # upright pixels, as stored
    np.testing.assert_array_equal(c0.keypoints[m.pairs()[:, 0]], f0.keypoints[[0, 2]])
    np.testing.assert_array_equal(c1.keypoints[m.pairs()[:, 1]], f1.keypoints[[3, 1]])
    plain = Matches(matches0, scores0)
    assert chosen_turn(f0, f1, plain) == (f0, f1, plain)  # no search: unchanged


@pytest.fixture(scope="module")
def turned_pair(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("turned")
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(read_image(ASSETS / "sample0.jpg"), cv2.COLOR_RGB2BGR))
    turned = np.ascontiguousarray(np.rot90(read_image(ASSETS / "sample1.jpg"), 1))
    cv2.imwrite(str(folder / "b.png"), cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
    return folder


def test_match_reports_the_turn_in_text_and_json(turned_pair):
    runner = CliRunner()
    pair = f"{turned_pair}/a.png {turned_pair}/b.png --rotation-search {SMALL}"
    text = runner.invoke(main, shlex.split(f"match {pair}"))
    assert text.exit_code == 0, text.output
    assert "b.png matched turned by 270 degrees" in text.stdout
    batch = runner.invoke(main, shlex.split(f"match --image-dir {turned_pair} --pairs-mode exhaustive --json "
                                            f"--rotation-search {SMALL}"))
    assert batch.exit_code == 0, batch.output
    line = [json.loads(x) for x in batch.stdout.splitlines() if '"type": "pair"' in x][0]
    assert line["rotation_degrees"] == 270 and line["matches"] > 20
    assert line["keypoints0"] <= 128 and line["keypoints1"] <= 128  # one turn's, not four


def test_eval_counts_the_chosen_turn_only(tmp_path):
    extractor = load_extractor("aliked", max_keypoints=128, resize=None, device="cpu")
    matcher = load_matcher("lightglue", features="aliked", device="cpu")
    plain = evaluate_homography(extractor, matcher, synthetic_images=ASSETS, num_pairs=1, resize=320, side="long",
                                output_dir=tmp_path / "plain")
    wrapped = with_rotation_search(extractor, matcher)
    assert wrapped[1].weights_id == matcher.weights_id == "aliked_lightglue"  # stores name the wrapped weights
    searching = evaluate_homography(*wrapped, synthetic_images=ASSETS, num_pairs=1, resize=320, side="long",
                                    output_dir=tmp_path / "search")
    record = searching.pairs[0]
    assert record["rotation_degrees"] == 0  # synthetic homographies keep the images about upright
    assert record["num_keypoints0"] <= 128 and record["num_keypoints1"] <= 128
    assert searching.summary["mean_keypoints"] == pytest.approx(plain.summary["mean_keypoints"])
    # the same keypoints and matches as without the search: the same recall
    assert math.isclose(record["recall"], plain.pairs[0]["recall"], rel_tol=0.05)
