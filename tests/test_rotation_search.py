"""Rotation search: the bundled sample pair with image 1 turned by 90 and 180 degrees keeps its verified inliers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightmatch.io.images import image_to_tensor, read_image
from lightmatch.models.factory import load_extractor, load_matcher
from lightmatch.io.homography import read_homography
from lightmatch.pipeline.match import count_correct, match_pair
from lightmatch.pipeline.rotation import match_with_rotation_search, rotate_keypoints
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


@pytest.mark.slow
def test_rotated_pairs_keep_their_inliers(models):
    extractor, matcher = models
    image0 = image_to_tensor(read_image(ASSETS / "sample0.jpg"))
    image1 = image_to_tensor(read_image(ASSETS / "sample1.jpg"))
    H = read_homography(ASSETS / "sample_H.txt")
    verify = VerifyOptions("homography")
    feats0 = extractor.extract(image0)
    feats1 = extractor.extract(image1)
    upright = int(verify_pair(feats0, feats1, matcher.match(feats0, feats1), "homography").sum())
    assert upright > 50
    w, h = image1.shape[-1], image1.shape[-2]
    for turns in (1, 2):  # image 1 as a user would give it: turned by 90 / 180 degrees
        turned = torch.rot90(image1, turns, dims=(1, 2))
        plain = matcher.match(feats0, extractor.extract(turned))
        found = match_with_rotation_search(image0, turned, extractor, matcher, verify, features0=feats0)
        assert found.turns == (4 - turns) % 4  # the search turns it back upright
        assert found.inliers.sum() >= 0.8 * upright
        assert found.inliers_per_turn[0] < 0.5 * upright  # upright ALIKED alone loses most of them
        assert plain.num_matches < found.matches.num_matches
        # keypoints are in the turned image's own pixels: turned back, they satisfy the sample's homography
        assert tuple(found.features1.image_size) == ((h, w) if turns % 2 else (w, h))
        upright_kpts = rotate_keypoints(found.features1.keypoints.numpy(), found.features1.image_size,
                                        (4 - turns) % 4)
        pairs = found.matches.pairs()[found.inliers[found.matches.pairs()[:, 0]]]
        correct = count_correct(found.features0.keypoints.numpy(), upright_kpts, pairs, H)
        assert correct.mean() > 0.9


@pytest.mark.slow
def test_match_pair_rotation_search(models, tmp_path):
    extractor, matcher = models
    turned = np.ascontiguousarray(np.rot90(read_image(ASSETS / "sample1.jpg"), 2))
    import cv2

    cv2.imwrite(str(tmp_path / "turned.png"), cv2.cvtColor(turned, cv2.COLOR_RGB2BGR))
    result = match_pair(ASSETS / "sample0.jpg", tmp_path / "turned.png", extractor, matcher, rotation_search=True,
                        viz_path=tmp_path / "m.png")
    line = result.event().to_json()
    assert line["rotation_degrees"] == 180 and line["matches"] > 50
    assert set(result.timings) >= {"extract", "match", "verify"}
    assert cv2.imread(str(tmp_path / "m.png")) is not None  # the plot of image 1 comes from the search's decoding
