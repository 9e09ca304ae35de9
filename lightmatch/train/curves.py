"""Training curves from ``metrics.jsonl``: losses, validation precision/recall and homography AUC."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..viz import _pyplot, _save


def plot_curves(metrics: str | os.PathLike, path: str | os.PathLike) -> None:
    """Three panels with labelled axes and units: training and validation loss; validation precision and recall
    (%); validation AUC@1/3/5 px (%). A run without validation (``--val-pairs 0``) has the loss only."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    axes[0].plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    axes[0].set_yscale("log")
    for key in ("precision", "recall"):
        axes[1].plot([r["step"] for r in val], [r[key] for r in val], "o-", label=f"val {key} (%)")
    for key in ("auc@1px", "auc@3px", "auc@5px"):
        axes[2].plot([r["step"] for r in val], [r[key] for r in val], "o-", label=f"val {key} (%)")
    axes[0].set_title("loss")
    axes[0].set_ylabel("loss (NLL + confidence BCE, nats; log scale)")
    axes[1].set_title("validation matches (3 px)")
    axes[1].set_ylabel("precision / recall (%)")
    axes[2].set_title("validation homography (RANSAC)")
    axes[2].set_ylabel("AUC of the corner error (%)")
    for ax in axes:
        ax.set_xlabel("training step (batches)")
        ax.legend()
        ax.grid(alpha=0.3)
    _save(fig, path)
