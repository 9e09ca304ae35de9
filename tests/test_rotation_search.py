"""Rotation search: four-turn feature sets, and the bundled sample pair with image 1 turned by 90 and 180 degrees
keeps its verified inliers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightmatch.errors import ConfigError
from lightmatch.io import h5
from lightmatch.io.homography import read_homography
from lightmatch.io.images import image_to_tensor, read_image
from lightmatch.models.factory import load_extractor, load_matcher
from lightmatch.pipeline.match import count_correct, match_pair
from lightmatch.pipeline.rotation import RotationSearchExtractor, keypoint_turns, rotate_keypoints, with_rotation_search
from lightmatch.pipeline.verify import VerifyOptions, verify_pair

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_rotate_keypoints_round_trip(rot):
    kpts = np.array([[0.0, 0.0], [6.0, 0.0], [2.0, 3.0], [6.0, 4.0]])
    image = np.zeros((5, 7))
    for x, y in kpts.astype(int):
        image[y, x] = 1
    moved = rotate_keypoints(kpts, (7, 5), rot)
    rotated = np.rot90(image, rot)
    assert all(rotated[int(y), int(x)] == 1 for x, y in moved)
    size = (5, 7) if rot % 2 else (7, 5)
    np.testing.assert_allclose(rotate_keypoints(moved, size, (4 - rot) % 4), kpts)


@pytest.fixture(scope="module")
def models():
    extractor = load_extractor("aliked", max_keypoints=384, resize=384, device="cpu")
    matcher = load_matcher("lightglue", features="aliked", device="cpu", depth_confidence=-1, width_confidence=-1)
    return extractor, matcher


@pytest.fixture(scope="module")
def searching(models):
    return with_rotation_search(*models, VerifyOptions("homography"))


def test_features_hold_every_turn_in_upright_pixels(models, searching):
    """One feature set per image: each turn's keypoints, moved back into the upright image, tagged by orientation."""
    extractor, _ = models
    image = image_to_tensor(read_image(ASSETS / "sample0.jpg"))
    feats = searching[0].extract(image)
    turns = keypoint_turns(feats)
    assert set(turns.tolist()) == {0, 1, 2, 3}
    w, h = feats.image_size
    assert (w, h) == (image.shape[-1], image.shape[-2])
    k = feats.keypoints
    assert (k[:, 0] >= -0.5).all() and (k[:, 0] <= w - 0.5).all()
    assert (k[:, 1] >= -0.5).all() and (k[:, 1] <= h - 0.5).all()
    upright = extractor.extract(image)
    np.testing.assert_allclose(feats.keypoints[turns == 0].numpy(), upright.keypoints.numpy(), atol=1e-4)
    np.testing.assert_allclose(feats.descriptors[turns == 0].numpy(), upright.descriptors.numpy(), atol=1e-5)
    # the turn-2 keypoints are the keypoints of the image turned by 180 degrees, turned back (the wrapper turns the
    # resized network input, so the order of near-equal scores may differ: compared as point sets)
    turned = extractor.extract(torch.rot90(image, 2, dims=(1, 2)))
    back = rotate_keypoints(turned.keypoints, turned.image_size, 2)
    nearest = torch.cdist(feats.keypoints[turns == 2], back).min(1).values
    assert len(nearest) == len(back) and (nearest < 1).all() and nearest.median() < 1e-3
    assert searching[0].name == f"{extractor.name}+rotation-search"
    assert searching[0].settings() == extractor.settings()  # the wrapped model's settings
    budgeted, _ = searching[0].with_keypoint_budget(100)  # a new search over a budgeted copy of the wrapped model
    assert budgeted.settings()["max_keypoints"] == 100 and budgeted.base.net is extractor.net
    assert extractor.max_keypoints == 384


def test_sift_is_refused():
    with pytest.raises(ConfigError, match="SIFT is rotation invariant"):
        RotationSearchExtractor(load_extractor("sift", max_keypoints=100, device="cpu"))


@pytest.mark.slow
def test_rotated_pairs_keep_their_inliers(models, searching):
    extractor, matcher = models
    image0 = image_to_tensor(read_image(ASSETS / "sample0.jpg"))
    image1 = image_to_tensor(read_image(ASSETS / "sample1.jpg"))
    H = read_homography(ASSETS / "sample_H.txt")
    feats0 = extractor.extract(image0)
    feats1 = extractor.extract(image1)
    upright = int(verify_pair(feats0, feats1, matcher.match(feats0, feats1), "homography").sum())
    assert upright > 50
    search_extractor, search_matcher = searching
    all0 = search_extractor.extract(image0)
    w, h = image1.shape[-1], image1.shape[-2]
    for turns in (1, 2):  # image 1 as a user would give it: turned by 90 / 180 degrees
        turned = torch.rot90(image1, turns, dims=(1, 2))
        plain = matcher.match(feats0, extractor.extract(turned))
        all1 = search_extractor.extract(turned)
        found = search_matcher.match(all0, all1)
        assert found.info["turns"] == (4 - turns) % 4  # the search turns it back upright
        counts = found.info["inliers_per_turn"]
        assert counts[found.info["turns"]] >= 0.8 * upright
        assert counts[0] < 0.5 * upright  # upright ALIKED alone loses most of them
        assert plain.num_matches < found.num_matches
        pairs = found.pairs()
        assert (keypoint_turns(all0)[pairs[:, 0]] == 0).all()
        assert (keypoint_turns(all1)[pairs[:, 1]] == found.info["turns"]).all()
        # keypoints are in the turned image's own pixels: turned back, they satisfy the sample's homography
        assert tuple(all1.image_size) == ((h, w) if turns % 2 else (w, h))
        upright_kpts = rotate_keypoints(all1.keypoints.numpy(), all1.image_size, (4 - turns) % 4)
        inliers = verify_pair(all0, all1, found, "homography")
        correct = count_correct(all0.keypoints.numpy(), upright_kpts, pairs[inliers[pairs[:, 0]]], H)
        assert correct.mean() > 0.9


@pytest.mark.slow
def test_match_pair_rotation_search(searching, tmp_path):
    extractor, matcher = searching
    turned = np.ascontiguousarray(np.rot90(read_image(ASSETS / "sample1.jpg"), 2))
    import cv2

    cv2.imwrite(str(tmp_path / "turned.png"), cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
    result = match_pair(ASSETS / "sample0.jpg", tmp_path / "turned.png", extractor, matcher,
                        output_dir=tmp_path / "out", viz_path=tmp_path / "m.png")
    line = result.event().to_json()
    assert line["rotation_degrees"] == 180 and line["matches"] > 50
    assert cv2.imread(str(tmp_path / "m.png")) is not None
    # the store holds the four turns (orientations included), so matches read back index the right keypoints
    back = h5.read_features(tmp_path / "out" / "features.h5", result.name1)
    assert keypoint_turns(back).tolist() == keypoint_turns(result.features1).tolist()
    pairs, _ = h5.read_matches(tmp_path / "out" / "matches.h5", result.name0, result.name1)
    np.testing.assert_array_equal(pairs, result.matches.pairs())


@pytest.mark.slow
def test_batch_rotation_search_stores_and_resumes(tmp_path):
    """A batch with --rotation-search: the stores hold every turn, the pair is matched at the turn that undoes
    the rotation, and a second run finds the pair done (the wrapped models' names are in the store settings)."""
    import cv2
    from click.testing import CliRunner

    from lightmatch.cli import main

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), cv2.cvtColor(read_image(ASSETS / "sample0.jpg"), cv2.COLOR_RGB2BGR))
    turned = np.ascontiguousarray(np.rot90(read_image(ASSETS / "sample1.jpg"), 1))
    cv2.imwrite(str(images / "b.png"), cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
    args = ["match", "--image-dir", str(images), "--pairs-mode", "exhaustive", "-o", str(tmp_path / "out"),
            "--rotation-search", "--resize", "384", "--max-keypoints", "384", "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    pair = [json.loads(line) for line in first.stdout.splitlines() if '"type": "pair"' in line]
    assert len(pair) == 1 and pair[0]["status"] == "ok" and pair[0]["matches"] > 50
    feats = h5.read_features(tmp_path / "out" / "features.h5", "b.png")
    assert set(keypoint_turns(feats).tolist()) == {0, 1, 2, 3}
    pairs, _ = h5.read_matches(tmp_path / "out" / "matches.h5", "a.png", "b.png")
    assert (keypoint_turns(feats)[pairs[:, 1]] == 3).all()  # b.png was turned by 90 degrees: matched at 270
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and '"status": "ok"' not in second.stdout
    refused = CliRunner().invoke(main, args[:-6] + ["--resize", "384", "--max-keypoints", "384"])
    assert refused.exit_code != 0 and "rotation-search" in refused.output  # a store made with other settings
