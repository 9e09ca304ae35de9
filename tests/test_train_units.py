"""Training pieces: homography pairs, ground truth against NumPy, losses on hand-made assignments, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_images

from lightmatch.errors import InputError
from lightmatch.models.lightglue import LightGlue
from lightmatch.models.superglue import SuperGlue
from lightmatch.train.config import find_images, split_images
from lightmatch.train.data import HomographyConfig, ground_truth, lg_augment, make_pair
from lightmatch.train.losses import assignment_weights, confidence_loss, lightglue_loss, nll_loss, superglue_loss


def numpy_ground_truth(k0, k1, H, pos=3.0, neg=3.0):
    def warp(p, M):
        q = np.c_[p, np.ones(len(p))] @ M.T
        return q[:, :2] / q[:, 2:]
    d0 = ((warp(k0, H)[:, None] - k1[None]) ** 2).sum(-1)
    d1 = ((k0[:, None] - warp(k1, np.linalg.inv(H))[None]) ** 2).sum(-1)
    d = np.maximum(d0, d1)
    m0 = np.full(len(k0), -2)
    m1 = np.full(len(k1), -2)
    for i in range(len(k0)):
        j = int(np.argmin(d[i]))
        if int(np.argmin(d[:, j])) == i and d[i, j] < pos ** 2:
            m0[i], m1[j] = j, i
    m0[d0.min(1) > neg ** 2] = -1
    m1[d1.min(0) > neg ** 2] = -1
    return m0, m1


def test_ground_truth_matches_numpy_with_known_homography():
    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.1, 20.0], [-0.05, 1.1, -10.0], [1e-4, -2e-4, 1.0]])
    k0 = rng.uniform(0, 320, (60, 2))
    proj = np.c_[k0, np.ones(60)] @ H.T
    proj = proj[:, :2] / proj[:, 2:]
    k1 = np.concatenate([proj[:30] + rng.normal(0, 0.8, (30, 2)),  # matchable
                         proj[30:40] + rng.uniform(3.2, 5.0, (10, 2)),  # ambiguous: between the thresholds
                         rng.uniform(-100, 500, (25, 2))])  # random, partly outside the image
    assignment, m0, m1 = ground_truth(torch.tensor(k0)[None], torch.tensor(k1)[None], torch.tensor(H)[None],
                                      torch.ones(1, 60, dtype=torch.bool), torch.ones(1, 65, dtype=torch.bool),
                                      th_positive=3.0, th_negative=6.0)
    e0, e1 = numpy_ground_truth(k0, k1, H, 3.0, 6.0)
    assert m0[0].tolist() == e0.tolist() and m1[0].tolist() == e1.tolist()
    assert {-2, -1}.issubset(set(e0.tolist())) and (e0 >= 0).sum() >= 25
    assert assignment[0].sum() == (e0 >= 0).sum() and all(assignment[0, i, j] for i, j in enumerate(e0) if j >= 0)


def test_ground_truth_ignores_padding():
    k0 = torch.tensor([[[10.0, 10.0], [0.0, 0.0]]])
    k1 = torch.tensor([[[10.5, 10.0], [0.0, 0.0], [50.0, 50.0]]])
    mask0, mask1 = torch.tensor([[True, False]]), torch.tensor([[True, False, True]])
    assignment, m0, m1 = ground_truth(k0, k1, torch.eye(3)[None].double(), mask0, mask1)
    assert m0.tolist() == [[0, -2]] and m1.tolist() == [[0, -2, -1]] and assignment.sum() == 1


def test_loss_on_hand_made_assignment():
    # 2 x 2 points: (0, 1) positive, point 1 of image 0 unmatchable, point 0 of image 1 ignored
    assignment = torch.tensor([[[False, True], [False, False]]])
    m0, m1 = torch.tensor([[1, -1]]), torch.tensor([[-2, 0]])
    w = assignment_weights(assignment, m0, m1)
    assert w[0].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]
    la = torch.log(torch.tensor([[[0.1, 0.5, 0.4], [0.2, 0.2, 0.25], [0.3, 0.3, 0.0]]]))
    expected = 0.5 * -np.log(0.5) + 0.5 * -np.log(0.25)
    assert nll_loss(la, w).item() == pytest.approx(expected, rel=1e-6)
    la[0, 2, 2] = float("-inf")  # zero-weight -inf entries (padding) do not make the loss infinite
    assert torch.isfinite(nll_loss(la, w)).all()


def test_confidence_loss_targets_are_argmax_agreement():
    now = torch.log(torch.tensor([[[0.7, 0.1, 0.2], [0.1, 0.6, 0.3], [0.5, 0.5, 0.0]]]))
    final = torch.log(torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.5, 0.5, 0.0]]]))
    logits = torch.zeros(1, 2, 2)
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    # logit 0 gives BCE log(2) whatever the target; a large logit separates agreeing from disagreeing points
    assert confidence_loss(logits, now, final, mask).item() == pytest.approx(np.log(2))
    # rows: row 0 agrees (0 == 0), row 1 disagrees (1 vs dustbin); columns: col 0 agrees, col 1 disagrees (1 vs 0)
    good = torch.tensor([[[10.0, -10.0], [10.0, -10.0]]])
    assert confidence_loss(good, now, final, mask).item() < 1e-3
    assert confidence_loss(-good, now, final, mask).item() > 5


def test_superglue_loss_and_step_give_finite_gradients():
    torch.manual_seed(0)
    sg = SuperGlue(pretrained=False, gnn_layers=("self", "cross"), sinkhorn_iterations=10).train()
    b, n = 2, 16
    k0, k1 = torch.rand(b, n, 2) * 100, torch.rand(b, n, 2) * 100
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 12:] = False
    with torch.enable_grad():
        la = sg(k0, torch.rand(b, n), torch.randn(b, n, 256), k1, torch.rand(b, n), torch.randn(b, n, 256),
                torch.tensor([100.0, 100.0]), torch.tensor([100.0, 100.0]), mask, mask)
        _, m0, m1 = ground_truth(k0, k1, torch.eye(3).double().expand(b, 3, 3), mask, mask)
        loss = superglue_loss(la, assignment_weights(m0[:, :, None] == torch.arange(n), m0, m1)).total.mean()
        loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in sg.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_lightglue_loss_gradients_are_finite_with_padding():
    torch.manual_seed(0)
    from lightmatch.types import Features
    lg = LightGlue("aliked", pretrained=False).train()
    pairs = [(Features(torch.rand(n, 2) * 100, torch.rand(n), torch.randn(n, 128), (100, 100)),
              Features(torch.rand(20, 2) * 100, torch.rand(20), torch.randn(20, 128), (100, 100))) for n in (20, 12)]
    batch = lg.pad_pairs(pairs)
    k0 = torch.stack([torch.cat([p[0].keypoints, torch.zeros(20 - len(p[0]), 2)]) for p in pairs])
    a, m0, m1 = ground_truth(k0, k0.clone(), torch.eye(3).double().expand(2, 3, 3), batch.mask[:, 0], batch.mask[:, 1])
    with torch.enable_grad():
        terms = lightglue_loss(lg, lg(batch), batch.mask, assignment_weights(a, m0, m1))
        terms.total.mean().backward()
    assert torch.isfinite(terms.total).all() and terms.confidence.min() > 0
    assert all(torch.isfinite(p.grad).all() for p in lg.parameters() if p.grad is not None)
    assert lg.token_confidence[0].token[0].weight.grad.abs().sum() > 0


def test_pairs_stay_inside_bounds_and_follow_the_homography():
    img = np.zeros((300, 400, 3), np.uint8)
    img[100:110, 150:160] = 255  # a bright square
    conf = HomographyConfig(patch_size=(160, 120), photometric_p=0.0)
    sample = make_pair(img, np.random.default_rng(3), conf)
    assert sample.image0.shape == (120, 160, 3)
    ys, xs = np.nonzero(sample.image0[..., 0] > 128)
    if len(xs):  # the square's centre maps onto the square in view 1
        p = sample.H_0to1 @ np.array([xs.mean(), ys.mean(), 1.0])
        x1, y1 = p[:2] / p[2]
        if 0 <= x1 < 160 and 0 <= y1 < 120:
            assert sample.image1[int(round(y1)), int(round(x1)), 0] > 64
    rng = np.random.default_rng(0)
    for _ in range(20):  # the warped patch's corners come from inside the image: no empty border
        from lightmatch.eval.homography_data import synthetic_homography
        H = synthetic_homography(rng, 400, 300, (160, 120), difficulty=0.7, max_angle=45)
        corners = np.array([[0, 0, 1], [159, 0, 1], [0, 119, 1], [159, 119, 1]], float) @ np.linalg.inv(H).T
        corners = corners[:, :2] / corners[:, 2:]
        assert (corners >= -1e-6).all() and (corners[:, 0] <= 400).all() and (corners[:, 1] <= 300).all()


def test_augmentation_is_seeded():
    img = (np.random.default_rng(0).uniform(0, 255, (60, 80, 3))).astype(np.uint8)
    a = lg_augment(np.random.default_rng(5), img)
    b = lg_augment(np.random.default_rng(5), img)
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.uint8


def test_split_by_image_and_errors(tmp_path):
    with pytest.raises(InputError, match="no images"):
        find_images([tmp_path])
    imgs = [tmp_path / f"{i}.png" for i in range(10)]
    train, val = split_images(imgs, 0.2, 0)
    assert len(val) == 2 and not set(train) & set(val) and len(train) + len(val) == 10
    with pytest.raises(InputError, match="at least 2"):
        split_images(imgs[:1], 0.1, 0)


def test_validation_extracts_its_fixed_pairs_once(tmp_path, monkeypatch):
    """The validation pairs are the same at every validation: their features are extracted at the first one only,
    and a later validation of the same model gives the same numbers (nothing held was changed in place)."""
    from lightmatch.train.loop import TrainConfig, Trainer

    make_images(tmp_path / "images", 4, size=(160, 120))
    config = TrainConfig(features="sift", images=[str(tmp_path / "images")], output=str(tmp_path / "run"), steps=1,
                         batch_size=2, n_layers=1, num_keypoints=32, patch_size=(128, 96), val_pairs=3,
                         val_fraction=0.25, device="cpu")
    trainer = Trainer(config)
    extract, calls = trainer.val_data._extract, []
    monkeypatch.setattr(trainer.val_data, "_extract", lambda image: calls.append(image.shape) or extract(image))
    first = trainer.validate()
    assert len(calls) == 6  # 3 pairs, 2 views each
    assert trainer.validate() == first and len(calls) == 6
    assert trainer.train_data.kept is None  # each training pair is used once: nothing is held


def test_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from lightmatch.cli import main

    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    out = runner.invoke(main, ["train", "--images", str(tmp_path / "empty"), "-o", str(tmp_path / "r"), "--steps", "1"])
    assert out.exit_code == 1 and "no images" in out.output and len(out.output.strip().splitlines()) == 1
    out = runner.invoke(main, ["train", "-o", str(tmp_path / "r"), "--steps", "1"])
    assert out.exit_code == 2 and "--images" in out.output


def test_curves_have_labelled_axes_with_units(tmp_path, monkeypatch):
    import json

    from lightmatch.train import curves

    records = [{"split": "val", "step": 0, "val_loss": 5.0, "precision": 40.0, "recall": 20.0, "auc@1px": 1.0,
                "auc@3px": 5.0, "auc@5px": 9.0},
               {"split": "train", "step": 10, "loss": 4.0}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = []
    monkeypatch.setattr(curves, "_save", lambda fig, path: figures.append(fig))
    curves.plot_curves(tmp_path / "m.jsonl", tmp_path / "c.png")
    axes = figures[0].axes
    assert all(ax.get_xlabel() == "training step (batches)" for ax in axes)
    assert "nats" in axes[0].get_ylabel() and "(%)" in axes[1].get_ylabel() and "(%)" in axes[2].get_ylabel()
