"""SuperPoint: strict loading of official-layout checkpoints, NMS / keypoint selection / descriptor sampling against
straightforward NumPy versions, and the extractor end to end (random weights: the official ones are not shipped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import OFFICIAL_SUPERPOINT, register_as_official, superpoint_checkpoint
from numpy.lib.stride_tricks import sliding_window_view

from lightmatch.errors import ConfigError, WeightsError
from lightmatch.models.superpoint import SuperPoint, sample_descriptors, select_keypoints, simple_nms


# Magic Leap's superpoint_v1.pth (and LightGlue's copy): every key and shape, as in the released file.
# ----------------------------------------------------------------------------------------------- loading
def test_official_layout_loads_strictly(tmp_path, monkeypatch):
    state = superpoint_checkpoint()
    model = SuperPoint.from_state_dict(state)
    assert set(model.state_dict()) == set(OFFICIAL_SUPERPOINT)
    for key, shape in OFFICIAL_SUPERPOINT.items():
        assert tuple(model.state_dict()[key].shape) == shape
        assert torch.equal(model.state_dict()[key], state[key])
    assert not model.training

    path = tmp_path / "superpoint_v1.pth"
    torch.save(state, path)
    explicit = SuperPoint.from_weights(path, resize=512, max_keypoints=100)
    assert explicit.resize == 512 and explicit.max_keypoints == 100
    assert torch.equal(explicit.convDb.weight, state["convDb.weight"])
    monkeypatch.setenv("LIGHTMATCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="checksum mismatch.*git blob id"):  # not Magic Leap's file
        SuperPoint.from_weights()
    register_as_official(monkeypatch, "superpoint", path)
    resolved = SuperPoint.from_weights()
    assert torch.equal(resolved.conv1a.weight, state["conv1a.weight"])


def test_missing_extra_or_misshapen_keys_are_rejected():
    state = superpoint_checkpoint()
    missing = {k: v for k, v in state.items() if k != "convPb.bias"}
    with pytest.raises(WeightsError, match=r"missing keys \['convPb.bias'\]") as err:
        SuperPoint.from_state_dict(missing, path_hint="sp.pth")
    assert "\n" not in str(err.value) and str(err.value).startswith("sp.pth")
    with pytest.raises(WeightsError, match=r"unexpected keys \['extra.weight'\]"):
        SuperPoint.from_state_dict({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match="size mismatch") as err:
        SuperPoint.from_state_dict({**state, "convDb.weight": torch.zeros(128, 256, 1, 1)})
    assert "\n" not in str(err.value)


def test_missing_file_is_a_weights_error(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="not found"):
        SuperPoint.from_weights(tmp_path / "nope.pth")
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTMATCH_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError, match="superpoint_v1.pth: weights 'superpoint' not found .*"
                                           "lightmatch weights download superpoint") as err:
        SuperPoint()  # the default constructor loads the official weights
    assert "\n" not in str(err.value)


def test_factory_style_constructor(tmp_path):
    """As ``models.factory.load_extractor`` builds it: weights_path, max_keypoints, detection_threshold."""
    path = tmp_path / "sp.pth"
    torch.save(superpoint_checkpoint(), path)
    sp = SuperPoint(max_keypoints=50, resize=64, weights_path=str(path), detection_threshold=-1)
    assert sp.keypoint_threshold == -1 and not sp.training
    feats = sp.extract(textured(96, 128, seed=5))
    assert len(feats) == 50  # threshold disabled: exactly max_keypoints
    assert SuperPoint(max_keypoints=None, weights_path=path).max_keypoints == -1


@pytest.mark.parametrize("opts", [{"max_keypoints": 0}, {"max_keypoints": -2}, {"exact_keypoints": 0},
                                  {"nms_radius": -1}])
def test_bad_options(opts):
    with pytest.raises(ConfigError):
        SuperPoint(pretrained=False, **opts)


# ----------------------------------------------------------------------------------------------- NumPy references
def np_max_pool(x: np.ndarray, r: int) -> np.ndarray:
    """Max over each (2r+1)^2 window, -inf outside the map (max_pool2d's padding)."""
    padded = np.pad(x, r, constant_values=-np.inf)
    return sliding_window_view(padded, (2 * r + 1, 2 * r + 1)).max(axis=(-1, -2))


def np_nms(scores: np.ndarray, r: int) -> np.ndarray:
    """SuperPoint's NMS written out in NumPy: local maxima, then two rounds recovering maxima outside the
    neighbourhoods of those already kept."""
    keep = scores == np_max_pool(scores, r)
    for _ in range(2):
        suppressed = np_max_pool(keep.astype(float), r) > 0
        remaining = np.where(suppressed, 0.0, scores)
        keep = keep | ((remaining == np_max_pool(remaining, r)) & ~suppressed)
    return np.where(keep, scores, 0.0)


def np_select(scores: np.ndarray, threshold, border: int, k: int):
    h, w = scores.shape
    pts = [(x, y) for y in range(h) for x in range(w)
           if border <= y < h - border and border <= x < w - border and (threshold is None or scores[y, x] > threshold)]
    pts = np.array(pts, dtype=np.float64).reshape(-1, 2)
    s = np.array([scores[int(y), int(x)] for x, y in pts])
    if 0 <= k < len(pts):
        order = np.argsort(-s, kind="stable")[:k]
        pts, s = pts[order], s[order]
    return pts, s


def np_sample(kpts: np.ndarray, desc: np.ndarray, s: int = 8) -> np.ndarray:
    """Bilinear interpolation at u = (x - s/2 + 0.5) / (w s - s/2 - 0.5) (w - 1), zeros outside, then L2."""
    c, h, w = desc.shape
    out = np.zeros((len(kpts), c))
    for n, (x, y) in enumerate(kpts):
        u = (x - s / 2 + 0.5) / (w * s - s / 2 - 0.5) * (w - 1)
        v = (y - s / 2 + 0.5) / (h * s - s / 2 - 0.5) * (h - 1)
        u0, v0 = int(np.floor(u)), int(np.floor(v))
        for du in (0, 1):
            for dv in (0, 1):
                uu, vv = u0 + du, v0 + dv
                weight = (1 - abs(u - uu)) * (1 - abs(v - vv))
                if 0 <= uu < w and 0 <= vv < h:
                    out[n] += weight * desc[:, vv, uu]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_nms_matches_numpy(radius):
    rng = np.random.default_rng(radius)
    for _ in range(3):
        scores = rng.random((37, 53)) ** 3  # continuous: no ties
        ours = simple_nms(torch.from_numpy(scores)[None], radius)[0].numpy()
        np.testing.assert_array_equal(ours, np_nms(scores, radius))
        kept = np.argwhere(ours > 0)
        # every strict local maximum of the input survives, and kept points are more than r apart
        local_max = scores == np_max_pool(scores, radius)
        assert np.all(ours[local_max] == scores[local_max])
        if radius > 0 and len(kept) > 1:
            cheb = np.abs(kept[:, None] - kept[None]).max(-1)
            np.fill_diagonal(cheb, radius + 1)
            assert cheb.min() > radius


@pytest.mark.parametrize("threshold,border,k", [(0.005, 4, -1), (0.3, 4, 25), (None, 0, 200), (0.1, 10, 5000),
                                                (0.5, 0, 0)])
def test_keypoint_selection_matches_numpy(threshold, border, k):
    rng = np.random.default_rng(7)
    scores = rng.random((40, 48)) ** 2
    if k == 0:
        k = 1
    kpts, s = select_keypoints(torch.from_numpy(scores), threshold, border, k)
    ref_kpts, ref_s = np_select(scores, threshold, border, k)
    np.testing.assert_array_equal(kpts.numpy(), ref_kpts)
    np.testing.assert_array_equal(s.numpy(), ref_s)


def test_descriptor_sampling_matches_numpy():
    rng = np.random.default_rng(3)
    h, w, c = 6, 9, 16
    desc = rng.standard_normal((c, h, w))
    kpts = np.concatenate([
        rng.uniform([0, 0], [w * 8 - 1, h * 8 - 1], size=(60, 2)),  # anywhere, borders included
        np.array([[0.0, 0.0], [w * 8 - 1.0, h * 8 - 1.0], [3.5, 3.5], [11.5, 19.5]]),  # corners, cell centres
    ])
    ours = sample_descriptors(torch.from_numpy(kpts)[None], torch.from_numpy(desc)[None], 8)[0].T.numpy()
    np.testing.assert_allclose(ours, np_sample(kpts, desc), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-6)
    # at a cell centre of the reference's convention the sample is the (normalised) cell itself
    u = 2
    x = (u / (w - 1)) * (w * 8 - 4.5) + 3.5
    y = 3.5
    one = sample_descriptors(torch.tensor([[[x, y]]]), torch.from_numpy(desc)[None], 8)[0, :, 0].numpy()
    np.testing.assert_allclose(one, desc[:, 0, u] / np.linalg.norm(desc[:, 0, u]), rtol=1e-6)
    assert sample_descriptors(torch.zeros(1, 0, 2), torch.from_numpy(desc)[None]).shape == (1, c, 0)


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def model() -> SuperPoint:
    torch.manual_seed(0)
    return SuperPoint.from_state_dict(superpoint_checkpoint(1), resize=None, keypoint_threshold=0.0)


def textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 1, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)[0]


def test_detect_and_describe_pipeline(model):
    img = textured(96, 140)  # 140 is not a multiple of 8: the score map covers 136 columns
    with torch.inference_mode():
        dense, dense_desc = model(img[None])
        kpts, scores, desc = model.detect_and_describe(img)
    assert dense.shape == (1, 96, 136) and dense_desc.shape == (1, 256, 12, 17)
    nms = simple_nms(dense, 4)[0]
    ref_kpts, ref_scores = np_select(nms.numpy().astype(np.float64), 0.0, 4, -1)
    np.testing.assert_array_equal(kpts.numpy(), ref_kpts)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-6)
    assert desc.shape == (len(kpts), 256)
    ref_desc = np_sample(kpts.numpy().astype(np.float64), dense_desc[0].numpy().astype(np.float64))
    np.testing.assert_allclose(desc.numpy(), ref_desc, atol=1e-5)


def test_extract_maps_back_and_limits(model):
    img = textured(120, 160, seed=2)
    model.resize, model.max_keypoints = 80, 30
    try:
        feats = model.extract(img)
    finally:
        model.resize, model.max_keypoints = None, -1
    assert len(feats) == 30 and feats.image_size == (160, 120)
    assert feats.descriptors.shape == (30, 256) and feats.keypoints.dtype == torch.float32
    assert torch.all(feats.scores[:-1] >= feats.scores[1:])  # top-k is sorted by score
    kx, ky = feats.keypoints.T
    # border of 4 network pixels at scale 2: keypoints are (k + 0.5) * 2 - 0.5 with 4 <= k < 60 - 4 (rows)
    assert kx.min() >= 4 * 2 + 0.5 and kx.max() <= (80 - 5) * 2 + 0.5
    assert ky.min() >= 4 * 2 + 0.5 and ky.max() <= (60 - 5) * 2 + 0.5
    torch.testing.assert_close(feats.descriptors.norm(dim=1), torch.ones(30))
    rgb = model.extract(img.expand(3, -1, -1))  # colour input is converted to grayscale
    assert rgb.descriptors.shape[1] == 256


def test_exact_keypoints_mode():
    sp = SuperPoint.from_state_dict(superpoint_checkpoint(2), resize=None, exact_keypoints=777,
                                    keypoint_threshold=0.99)
    feats = sp.extract(textured(128, 160, seed=4))
    assert len(feats) == 777 and feats.descriptors.shape == (777, 256)
    assert len(torch.unique(feats.keypoints, dim=0)) == 777
