"""A tiny training run: a 2-layer LightGlue from scratch on homographies of the shared images learns."""

from __future__ import annotations

import json

import pytest

from lightmatch.train.loop import TrainConfig, train


@pytest.mark.slow
def test_tiny_lightglue_from_scratch_learns(shared_data, tmp_path):
    """30 steps of 4 pairs (SIFT, 64 keypoints, 240x180 crops). The validation loss falls, and at LightGlue's
    operating threshold (0.1) the untrained model matches nothing while the trained one matches, mostly correctly.
    (Precision over *every* mutual best match, glue-factory's threshold 0, needs more steps than a test can afford:
    a random transformer keeps the descriptors' nearest-neighbour matches, a strong start.)"""
    config = TrainConfig(features="sift", images=[str(shared_data / "sacre_coeur")], output=str(tmp_path / "run"),
                         steps=30, batch_size=4, lr=5e-4, n_layers=2, num_keypoints=64, patch_size=(240, 180),
                         val_every=30, val_pairs=8, checkpoint_every=30, log_every=5, device="cpu")
    train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert val[0]["step"] == 0 and val[-1]["step"] == 30
    assert val[-1]["val_loss"] < 0.9 * val[0]["val_loss"]
    assert sum(losses[-2:]) < sum(losses[:2])
    assert val[0]["precision@0.1"] == val[0]["recall@0.1"] == 0.0
    assert val[-1]["recall@0.1"] > 0.0 and val[-1]["precision@0.1"] > 50.0
