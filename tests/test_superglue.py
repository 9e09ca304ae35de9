"""SuperGlue: strict loading of official-layout checkpoints, the log-space Sinkhorn (marginals, large scores, fp16,
gradients), and matching end to end with a hand-set network whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import official_superglue_layout, register_as_official, superglue_checkpoint

from lightmatch.errors import ConfigError, WeightsError
from lightmatch.geometry import normalize_keypoints
from lightmatch.models.superglue import SUPERGLUE_EXTENT, SuperGlue, extract_matches, log_optimal_transport
from lightmatch.types import Features


# ----------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("with_bn_counters", [True, False])
def test_official_layout_loads_strictly(with_bn_counters):
    state = superglue_checkpoint(with_bn_counters)
    model = SuperGlue.from_state_dict(state, variant="indoor")
    own = model.state_dict()
    assert set(own) == set(official_superglue_layout(True))
    for key, value in state.items():
        assert own[key].shape == value.shape, key
        assert torch.equal(own[key], value), key
    assert not model.training


def test_from_weights_indoor_outdoor(tmp_path, monkeypatch):
    state = superglue_checkpoint(seed=1)
    torch.save(state, tmp_path / "superglue_outdoor.pth")
    monkeypatch.setenv("LIGHTMATCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="checksum mismatch.*git blob id"):  # not Magic Leap's file
        SuperGlue.from_weights("outdoor")
    register_as_official(monkeypatch, "superglue_outdoor", tmp_path / "superglue_outdoor.pth")
    outdoor = SuperGlue.from_weights("outdoor", sinkhorn_iterations=20)
    assert outdoor.sinkhorn_iterations == 20 and torch.equal(outdoor.bin_score, state["bin_score"])
    with pytest.raises(WeightsError, match="superglue_indoor.pth: weights 'superglue_indoor' not found"):
        SuperGlue.from_weights("indoor")
    indoor = SuperGlue.from_weights("indoor", path=tmp_path / "superglue_outdoor.pth")
    assert torch.equal(indoor.final_proj.weight, state["final_proj.weight"])
    with pytest.raises(ConfigError, match="indoor, outdoor"):
        SuperGlue.from_weights("underwater")
    # as models.factory.load_matcher builds it
    factory = SuperGlue(weights_path=str(tmp_path / "superglue_outdoor.pth"), variant="indoor", match_threshold=0.3,
                        sinkhorn_iterations=10)
    assert factory.match_threshold == 0.3 and torch.equal(factory.bin_score, state["bin_score"])


def test_missing_or_extra_keys_are_rejected():
    state = superglue_checkpoint()
    del state["gnn.layers.17.mlp.3.bias"]
    with pytest.raises(WeightsError, match=r"missing keys \['gnn.layers.17.mlp.3.bias'\]") as err:
        SuperGlue.from_state_dict(state, path_hint="sg.pth")
    assert "\n" not in str(err.value) and "superglue_outdoor" in str(err.value)
    state = superglue_checkpoint()
    state["gnn.layers.18.attn.merge.weight"] = torch.zeros(256, 256, 1)
    with pytest.raises(WeightsError, match=r"unexpected keys \['gnn.layers.18.attn.merge.weight'\]"):
        SuperGlue.from_state_dict(state)
    state = superglue_checkpoint()
    state["final_proj.weight"] = torch.zeros(256, 256)  # a Linear's shape, not Conv1d's
    with pytest.raises(WeightsError, match="size mismatch"):
        SuperGlue.from_state_dict(state)


# ----------------------------------------------------------------------------------------------- Sinkhorn
def np_log_optimal_transport(scores: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    """The same iterations in float64 NumPy (reference for precision)."""
    b, m, n = scores.shape
    Z = np.full((b, m + 1, n + 1), alpha, dtype=np.float64)
    Z[:, :m, :n] = scores
    norm = -np.log(m + n)
    log_mu = np.concatenate([np.full(m, norm), [np.log(n) + norm]])
    log_nu = np.concatenate([np.full(n, norm), [np.log(m) + norm]])

    def lse(x, axis):
        mx = x.max(axis=axis, keepdims=True)
        return (mx + np.log(np.exp(x - mx).sum(axis=axis, keepdims=True))).squeeze(axis)

    u, v = np.zeros((b, m + 1)), np.zeros((b, n + 1))
    for _ in range(iters):
        u = log_mu - lse(Z + v[:, None, :], 2)
        v = log_nu - lse(Z + u[:, :, None], 1)
    return Z + u[:, :, None] + v[:, None, :] - norm


@pytest.mark.parametrize("m,n", [(7, 11), (20, 5), (1, 1)])
def test_sinkhorn_marginals_converge(m, n):
    torch.manual_seed(m * 100 + n)
    scores = torch.randn(2, m, n) * 3
    Z = log_optimal_transport(scores, torch.tensor(0.5), iters=300)
    assert Z.shape == (2, m + 1, n + 1) and Z.dtype == torch.float32
    P = Z.exp()
    rows = torch.tensor([1.0] * m + [float(n)]).expand(2, -1)
    cols = torch.tensor([1.0] * n + [float(m)]).expand(2, -1)
    torch.testing.assert_close(P.sum(2), rows, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(P.sum(1), cols, atol=1e-4, rtol=1e-4)
    assert torch.all(P >= 0)
    np.testing.assert_allclose(Z.numpy(), np_log_optimal_transport(scores.double().numpy(), 0.5, 300),
                               atol=1e-4, rtol=1e-5)


def test_sinkhorn_large_scores_fp16_no_overflow():
    torch.manual_seed(0)
    # scores near fp16's range: exp() of them overflows any non-log implementation
    scores16 = (torch.randn(1, 16, 24) * 2000).clamp(-60000, 60000).half()
    Z16 = log_optimal_transport(scores16, torch.tensor(3.0, dtype=torch.float16), iters=100)
    assert Z16.dtype == torch.float32 and torch.isfinite(Z16).all()
    Z32 = log_optimal_transport(scores16.float(), torch.tensor(3.0), iters=100)
    torch.testing.assert_close(Z16, Z32, rtol=0, atol=0)  # identical: computed in float32 either way
    ref = np_log_optimal_transport(scores16.double().numpy(), 3.0, 100)
    np.testing.assert_allclose(Z16.numpy(), ref, rtol=1e-5, atol=0.05)
    # the last update normalises columns: their marginals hold exactly, whatever the scale
    torch.testing.assert_close(Z16.exp().sum(1)[0], torch.tensor([1.0] * 24 + [16.0]), atol=1e-4, rtol=1e-4)
    # a constant added to every score and the dustbin changes nothing (up to float32 rounding of values ~ 1e4)
    Z_shift = log_optimal_transport(scores16.float() + 1000, torch.tensor(1003.0), iters=100)
    torch.testing.assert_close(Z_shift.exp(), Z32.exp(), atol=1e-3, rtol=0)


def test_sinkhorn_under_autocast_is_float32():
    scores = torch.randn(2, 9, 10) * 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Z = log_optimal_transport(scores, torch.tensor(1.0), 50)
    assert Z.dtype == torch.float32
    torch.testing.assert_close(Z, log_optimal_transport(scores, torch.tensor(1.0), 50))


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1.0), (torch.float32, 500.0), (torch.float16, 300.0)])
@torch.enable_grad()  # the suite's conftest disables gradients by default
def test_sinkhorn_gradients_finite(dtype, scale):
    torch.manual_seed(1)
    scores = (torch.randn(2, 12, 15) * scale).to(dtype).requires_grad_()
    alpha = torch.tensor(1.0, requires_grad=True)
    Z = log_optimal_transport(scores, alpha, iters=50)
    # negative log-likelihood of a ground-truth assignment: 0-0, 1-1, ..., rest to the dustbins
    gt_rows = torch.arange(12)
    gt_cols = torch.where(gt_rows < 10, gt_rows, torch.full_like(gt_rows, 15))
    loss = -Z[:, gt_rows, gt_cols].mean() - Z[:, -1, 10:15].mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert scores.grad is not None and scores.grad.dtype == dtype and torch.isfinite(scores.grad).all()
    assert alpha.grad is not None and torch.isfinite(alpha.grad)
    assert scores.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- network
def test_normalize_keypoints():
    kpts = torch.tensor([[[0.0, 0.0], [640.0, 480.0], [320.0, 240.0]]])
    out = normalize_keypoints(kpts, torch.tensor([640.0, 480.0]), SUPERGLUE_EXTENT)
    torch.testing.assert_close(out, torch.tensor([[[-320 / 448, -240 / 448], [320 / 448, 240 / 448], [0.0, 0.0]]]))


def identity_superglue(scale: float = 160.0, **opts) -> SuperGlue:
    """A SuperGlue whose GNN and keypoint encoder add nothing and whose projection is ``sqrt(scale) * I``, so the
    scores are ``scale / sqrt(256)`` times the cosine similarity of the input descriptors."""
    model = SuperGlue(pretrained=False, **opts)
    with torch.no_grad():
        for layer in model.gnn.layers:
            layer.mlp[-1].weight.zero_()
            layer.mlp[-1].bias.zero_()
        model.kenc.encoder[-1].weight.zero_()
        model.kenc.encoder[-1].bias.zero_()
        model.final_proj.weight.copy_(torch.eye(256)[:, :, None] * scale ** 0.5)
        model.final_proj.bias.zero_()
        model.bin_score.fill_(0.0)
    return model


def random_features(n: int, seed: int, size=(640, 480)) -> Features:
    g = torch.Generator().manual_seed(seed)
    kpts = torch.rand(n, 2, generator=g) * torch.tensor(size, dtype=torch.float32)
    desc = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=1)
    return Features(kpts, torch.rand(n, generator=g), desc, size)


def test_match_recovers_a_permutation():
    model = identity_superglue(sinkhorn_iterations=50, gnn_layers=("self", "cross") * 2)
    f0 = random_features(60, 0)
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:45]
    extra = random_features(10, 2)
    f1 = Features(
        keypoints=torch.cat([f0.keypoints[perm], extra.keypoints]),
        scores=torch.cat([f0.scores[perm], extra.scores]),
        descriptors=torch.nn.functional.normalize(
            torch.cat([f0.descriptors[perm], extra.descriptors]) + 0.05 * torch.randn(55, 256), dim=1),
        image_size=(640, 480),
    )
    matches = model.match(f0, f1)
    assert matches.matches0.shape == (60,) and matches.matches0.dtype == torch.int64
    expected = torch.full((60,), -1)
    expected[perm] = torch.arange(45)
    assert torch.equal(matches.matches0, expected)
    matched = matches.matches0 > -1
    assert torch.all(matches.scores0[matched] > 0.2) and torch.all(matches.scores0[matched] <= 1)
    assert torch.all(matches.scores0[~matched] == 0)
    assert matches.stop_layer == 4


def test_match_thresholds_and_mutual_check_on_random_weights():
    model = SuperGlue.from_state_dict(superglue_checkpoint(seed=3), sinkhorn_iterations=20, match_threshold=0.0)
    f0, f1 = random_features(40, 4), random_features(30, 5)
    matches = model.match(f0, f1)
    m0 = matches.matches0[matches.matches0 > -1]
    assert len(torch.unique(m0)) == len(m0)  # one-to-one
    assert torch.all((matches.scores0 >= 0) & (matches.scores0 <= 1))
    kp = lambda f: f.keypoints[None]  # noqa: E731
    with torch.inference_mode():
        Z = model(kp(f0), f0.scores[None], f0.descriptors[None], kp(f1), f1.scores[None], f1.descriptors[None],
                  torch.tensor(f0.image_size), torch.tensor(f1.image_size))
    m0_ref, m1_ref, s0_ref, _ = extract_matches(Z, 0.0)
    assert torch.equal(matches.matches0, m0_ref[0])
    for i, j in enumerate(m0_ref[0].tolist()):  # mutual: i's best is j and j's best is i
        if j > -1:
            assert Z[0, i, :-1].argmax() == j and Z[0, :-1, j].argmax() == i and m1_ref[0, j] == i


def test_match_empty_inputs():
    model = identity_superglue(gnn_layers=("self", "cross"))
    empty = Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 256), (640, 480))
    f = random_features(5, 0)
    out = model.match(f, empty)
    assert torch.equal(out.matches0, torch.full((5,), -1)) and torch.equal(out.scores0, torch.zeros(5))
    assert model.match(empty, f).matches0.shape == (0,)


def test_match_rejects_other_descriptor_sizes():
    model = identity_superglue(gnn_layers=("self",))
    f = random_features(5, 0)
    small = Features(f.keypoints, f.scores, f.descriptors[:, :128], f.image_size)
    with pytest.raises(ConfigError, match="256-d"):
        model.match(small, small)


@torch.enable_grad()
def test_batched_forward_is_trainable():
    torch.manual_seed(0)
    model = SuperGlue(descriptor_dim=64, keypoint_encoder=(16, 32), gnn_layers=("self", "cross"),
                      sinkhorn_iterations=20, pretrained=False).train()
    b, m, n = 3, 10, 12
    kpts0, kpts1 = torch.rand(b, m, 2) * 100, torch.rand(b, n, 2) * 100
    desc0, desc1 = torch.randn(b, m, 64), torch.randn(b, n, 64)
    Z = model(kpts0, torch.rand(b, m), desc0, kpts1, torch.rand(b, n), desc1,
              torch.tensor([[100.0, 100.0]] * b), torch.tensor([100.0, 100.0]))
    assert Z.shape == (b, m + 1, n + 1)
    loss = -Z[:, torch.arange(m), torch.arange(m)].mean() - Z[:, -1, m:n].mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.bin_score.grad.abs() > 0 and model.final_proj.weight.grad.abs().sum() > 0


def test_built_by_the_factory(tmp_path):
    from lightmatch.models.factory import load_extractor, load_matcher

    torch.save(superglue_checkpoint(seed=4), tmp_path / "sg.pth")
    matcher = load_matcher("superglue", features="superpoint", device="cpu", weights=str(tmp_path / "sg.pth"),
                           variant="indoor", sinkhorn_iterations=5, match_threshold=None)
    assert isinstance(matcher, SuperGlue) and matcher.sinkhorn_iterations == 5
    from lightmatch.models.superpoint import SuperPoint

    torch.save(SuperPoint(pretrained=False).state_dict(), tmp_path / "sp.pth")
    extractor = load_extractor("superpoint", max_keypoints=64, resize=128, device="cpu",
                               weights=str(tmp_path / "sp.pth"), detection_threshold=-1)
    image = torch.rand(1, 96, 128)
    out = matcher.match(extractor.extract(image), extractor.extract(image))
    assert out.matches0.shape == (64,)


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_reduced_precision_on_cpu(precision):
    model = identity_superglue(sinkhorn_iterations=30, gnn_layers=("self", "cross"), precision=precision)
    f0 = random_features(30, 7)
    out = model.match(f0, f0)
    assert torch.equal(out.matches0, torch.arange(30)) and out.scores0.dtype == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        SuperGlue(pretrained=False, precision="fp8")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_matches_cpu(precision):
    cpu = identity_superglue(sinkhorn_iterations=30, gnn_layers=("self", "cross"))
    gpu = identity_superglue(sinkhorn_iterations=30, gnn_layers=("self", "cross"), precision=precision).cuda()
    f0, f1 = random_features(40, 8), random_features(40, 8)
    a, b = cpu.match(f0, f1), gpu.match(f0, f1)
    assert b.matches0.device.type == "cuda" and torch.equal(a.matches0, b.matches0.cpu())
    torch.testing.assert_close(a.scores0, b.scores0.cpu(), atol=2e-2 if precision == "fp16" else 1e-4, rtol=0)
