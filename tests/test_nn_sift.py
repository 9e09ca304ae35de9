"""Nearest-neighbour matcher on constructed descriptors (mutual check, ratio test, distance threshold, chunking,
empty inputs) and OpenCV SIFT on a generated texture and its shifted copy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightmatch.errors import ConfigError
from lightmatch.models.nearest_neighbor import NearestNeighborMatcher, nearest_neighbor_match
from lightmatch.models.sift import SIFT, sift_to_rootsift
from lightmatch.types import Features


def feats(desc: torch.Tensor) -> Features:
    n = desc.shape[0]
    return Features(torch.zeros(n, 2), torch.ones(n), desc, (100, 100))


def np_nn(d0: np.ndarray, d1: np.ndarray, ratio=None, dist=None, mutual=True) -> np.ndarray:
    """Brute force: normalise, squared distances, nearest and second nearest, tests in both directions."""
    d0 = d0 / np.linalg.norm(d0, axis=1, keepdims=True)
    d1 = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    sq = ((d0[:, None] - d1[None]) ** 2).sum(-1)

    def one_way(sq):
        out = np.full(len(sq), -1)
        for i, row in enumerate(sq):
            order = np.argsort(row)
            best = order[0]
            ok = True
            if ratio is not None and len(row) > 1:
                ok &= row[best] <= ratio ** 2 * row[order[1]]
            if dist is not None:
                ok &= row[best] <= dist ** 2
            out[i] = best if ok else -1
        return out

    m0 = one_way(sq)
    if mutual:
        m1 = one_way(sq.T)
        m0 = np.array([j if j > -1 and m1[j] == i else -1 for i, j in enumerate(m0)])
    return m0


def test_recovers_a_permutation_with_scores_in_unit_range():
    g = torch.Generator().manual_seed(0)
    d0 = torch.randn(50, 64, generator=g)
    perm = torch.randperm(50, generator=g)
    d1 = d0[perm] * 3.0 + 0.05 * torch.randn(50, 64, generator=g)  # any scale: descriptors are normalised
    m = NearestNeighborMatcher().match(feats(d0), feats(d1))
    inverse = torch.argsort(perm)
    assert torch.equal(m.matches0, inverse) and m.matches0.dtype == torch.int64
    assert torch.all((m.scores0 > 0.9) & (m.scores0 <= 1.0))


def test_mutual_check():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    d0 = torch.stack([a, F.normalize(a + 0.1 * b, dim=0), b])  # rows 0 and 1 both nearest to d1[0]
    d1 = torch.stack([F.normalize(a + 0.05 * b, dim=0), b])
    mutual = NearestNeighborMatcher(mutual_check=True).match(feats(d0), feats(d1))
    one_way = NearestNeighborMatcher(mutual_check=False).match(feats(d0), feats(d1))
    assert one_way.matches0.tolist() == [0, 0, 1]
    assert mutual.matches0.tolist() == [-1, 0, 1]  # d1[0] is closer to d0[1] than to d0[0]
    assert mutual.scores0[0] == 0 and mutual.scores0[1] > 0.99


def test_ratio_and_distance_thresholds():
    e = torch.eye(4)
    d0 = torch.stack([e[0], e[2]])
    d1 = torch.stack([F.normalize(e[0] + 0.30 * e[1], dim=0), F.normalize(e[0] + 0.32 * e[3], dim=0),
                      F.normalize(e[2] + 0.5 * e[3], dim=0)])
    plain = NearestNeighborMatcher(mutual_check=False).match(feats(d0), feats(d1))
    assert plain.matches0.tolist() == [0, 2]
    ratio = NearestNeighborMatcher(ratio_threshold=0.8, mutual_check=False).match(feats(d0), feats(d1))
    assert ratio.matches0.tolist() == [-1, 2]  # two near-equal candidates for d0[0]: ambiguous
    dist = NearestNeighborMatcher(distance_threshold=0.4, mutual_check=False).match(feats(d0), feats(d1))
    assert dist.matches0.tolist() == [0, -1]  # |e2 - (e2 + 0.5 e3)/|.|| ~ 0.46 > 0.4
    # the ratio test with a single candidate passes
    single = nearest_neighbor_match(d0, d1[:1], ratio_threshold=0.8, mutual_check=False)[0]
    assert single.tolist() == [0, 0]


@pytest.mark.parametrize("ratio,dist,mutual", [(None, None, True), (0.9, None, True), (0.95, 1.2, False),
                                               (None, 1.3, True)])
@pytest.mark.parametrize("chunk", [3, 4096])
def test_matches_brute_force_numpy(ratio, dist, mutual, chunk):
    rng = np.random.default_rng(5)
    d0 = rng.standard_normal((37, 16))
    d1 = np.concatenate([d0[:20] + 0.6 * rng.standard_normal((20, 16)), rng.standard_normal((13, 16))])
    m0, s0 = nearest_neighbor_match(torch.from_numpy(d0).float(), torch.from_numpy(d1).float(), ratio, dist, mutual,
                                    chunk_size=chunk)
    ref = np_nn(d0, d1, ratio, dist, mutual)
    np.testing.assert_array_equal(m0.numpy(), ref)
    assert (ref > -1).sum() > 5
    sim = (F.normalize(torch.from_numpy(d0).float(), dim=1) @ F.normalize(torch.from_numpy(d1).float(), dim=1).T)
    valid = m0 > -1
    torch.testing.assert_close(s0[valid], (sim[valid, m0[valid]] + 1) / 2)
    assert torch.all(s0[~valid] == 0)


def test_empty_inputs():
    nn_matcher = NearestNeighborMatcher(ratio_threshold=0.8)
    some, none = feats(torch.randn(4, 8)), feats(torch.zeros(0, 8))
    out = nn_matcher.match(some, none)
    assert out.matches0.tolist() == [-1] * 4 and out.scores0.tolist() == [0.0] * 4
    assert nn_matcher.match(none, some).matches0.shape == (0,)
    assert nn_matcher.match(none, none).matches0.shape == (0,)
    one = feats(torch.randn(1, 8))
    assert nn_matcher.match(one, one).matches0.tolist() == [0]


def test_bad_options():
    with pytest.raises(ConfigError):
        NearestNeighborMatcher(ratio_threshold=1.5)
    with pytest.raises(ConfigError):
        NearestNeighborMatcher(distance_threshold=-1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    d0, d1 = torch.randn(300, 128), torch.randn(250, 128)
    cpu = NearestNeighborMatcher(ratio_threshold=0.95).match(feats(d0), feats(d1))
    gpu_matcher = NearestNeighborMatcher(ratio_threshold=0.95).to("cuda")
    assert gpu_matcher.device.type == "cuda"
    gpu = gpu_matcher.match(feats(d0), feats(d1))
    assert gpu.matches0.device.type == "cuda"
    assert torch.equal(gpu.matches0.cpu(), cpu.matches0)


# ----------------------------------------------------------------------------------------------- SIFT
@pytest.fixture(scope="module")
def shifted_pair() -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """A smooth random texture and a copy whose content is moved by (-13, -7) pixels."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.random((300, 400)).astype(np.float32), (0, 0), 2.0)
    big = (big - big.min()) / (big.max() - big.min())
    dx, dy = 13, 7
    im0 = big[20:260, 20:340]
    im1 = big[20 + dy:260 + dy, 20 + dx:340 + dx]  # im1[y, x] = im0[y + dy, x + dx]
    return torch.from_numpy(im0.copy())[None], torch.from_numpy(im1.copy())[None], (dx, dy)


@pytest.mark.parametrize("resize", [None, 200])
def test_sift_shifted_copy_gives_the_offset(shifted_pair, resize):
    im0, im1, (dx, dy) = shifted_pair
    sift = SIFT(resize=resize, max_keypoints=800)
    f0, f1 = sift.extract(im0), sift.extract(im1.expand(3, -1, -1))  # colour input works too
    assert f0.image_size == (320, 240)
    matches = NearestNeighborMatcher(ratio_threshold=0.8).match(f0, f1)
    pairs = matches.pairs()
    assert len(pairs) > 200
    offsets = (f0.keypoints[pairs[:, 0]] - f1.keypoints[pairs[:, 1]]).numpy()
    np.testing.assert_allclose(np.median(offsets, 0), [dx, dy], atol=0.05 if resize is None else 0.3)
    assert (np.linalg.norm(offsets - [dx, dy], axis=1) < 1.5).mean() > 0.95
    # scales and orientations of matched points agree (same content, same scale)
    s0, s1 = f0.scales[pairs[:, 0]], f1.scales[pairs[:, 1]]
    assert torch.median((s0 / s1 - 1).abs()) < 0.05
    dori = torch.remainder(f0.oris[pairs[:, 0]] - f1.oris[pairs[:, 1]] + np.pi, 2 * np.pi) - np.pi
    assert torch.median(dori.abs()) < 0.05


def test_sift_features_fields(shifted_pair):
    im0 = shifted_pair[0]
    sift = SIFT(resize=None, max_keypoints=300)
    f = sift.extract(im0)
    assert len(f) == 300 and f.descriptors.shape == (300, 128)
    assert f.scales.shape == (300,) and f.oris.shape == (300,)
    assert torch.all(f.scales > 0) and torch.all((f.oris >= 0) & (f.oris < 2 * np.pi + 1e-4))
    assert torch.all(f.scores[:-1] >= f.scores[1:])  # top-k by response, sorted
    torch.testing.assert_close(f.descriptors.norm(dim=1), torch.ones(300))
    assert torch.all(f.descriptors >= 0)
    # the kept ones are the strongest of all
    everything = SIFT(resize=None, max_keypoints=-1).extract(im0)
    assert len(everything) > 300
    torch.testing.assert_close(f.scores, torch.sort(everything.scores, descending=True).values[:300])
    # scales are reported in original-image pixels when the network image is resized
    half = SIFT(resize=160, max_keypoints=-1).extract(im0)
    assert 0.7 < float(half.scales.median() / everything.scales.median()) < 1.6
    assert not hasattr(sift, "_last") or not sift._last  # nothing left behind


def test_sift_raw_descriptors_and_rootsift():
    raw = torch.tensor([[4.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    root = sift_to_rootsift(raw)
    torch.testing.assert_close(root[0], torch.tensor([0.8, 0.0, 0.2, 0.0]).sqrt(), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(root.norm(dim=1), torch.ones(2))
    blank = torch.zeros(1, 64, 64)
    f = SIFT(resize=None, rootsift=False).extract(blank)  # no keypoints at all
    assert len(f) == 0 and f.descriptors.shape == (0, 128) and f.scales.shape == (0,)
    with pytest.raises(ConfigError):
        SIFT(max_keypoints=0)


def test_built_by_the_factory(shifted_pair):
    from lightmatch.models.factory import load_extractor, load_matcher

    sift = load_extractor("sift", max_keypoints=500, resize=None, device="cpu", detection_threshold=0.01)
    assert isinstance(sift, SIFT) and sift.contrast_threshold == 0.01 and sift.max_keypoints == 500
    matcher = load_matcher("nn", features="sift", device="cpu", ratio_threshold=0.8, distance_threshold=None)
    assert isinstance(matcher, NearestNeighborMatcher)
    im0, im1, _ = shifted_pair
    assert matcher.match(sift.extract(im0), sift.extract(im1)).num_matches > 100


def test_sift_negative_threshold_disables_it(shifted_pair):
    sift = SIFT(resize=None, max_keypoints=-1, detection_threshold=-1)
    assert sift.contrast_threshold == 0.0
    assert len(sift.extract(shifted_pair[0])) >= len(SIFT(resize=None, max_keypoints=-1).extract(shifted_pair[0]))
