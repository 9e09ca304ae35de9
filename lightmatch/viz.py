"""Pictures: match plots (side by side, lines coloured by confidence or correctness) and benchmark curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import OutputError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.05)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write plot ({exc.strerror or exc})") from exc
    finally:
        _pyplot().close(fig)


def plot_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, path: str | os.PathLike, scores: Optional[np.ndarray] = None,
                 correct: Optional[np.ndarray] = None, title: str = "", text: Sequence[str] = ()) -> None:
    """Draw two images side by side with their matches and save to ``path`` (PNG/JPEG/PDF by extension).

    Args:
        image0, image1: ``(H, W[, 3])`` images.
        kpts0, kpts1: ``(N0, 2)``, ``(N1, 2)`` keypoints in those images' pixels.
        matches: ``(M, 2)`` index pairs.
        scores: ``(M,)`` confidences in [0, 1]: lines coloured red (low) to green (high).
        correct: ``(M,)`` bools: green for correct, red for wrong (takes precedence over ``scores``).
        title, text: a title and lines of text drawn in the top-left corner.
    """
    plt = _pyplot()
    image0, image1 = _as_rgb(image0), _as_rgb(image1)
    h0, w0 = image0.shape[:2]
    h1, w1 = image1.shape[:2]
    gap = 10
    canvas = np.full((max(h0, h1), w0 + gap + w1, 3), 255, dtype=np.uint8)
    canvas[:h0, :w0] = image0
    canvas[:h1, w0 + gap:] = image1
    width = canvas.shape[1]
    fig = plt.figure(figsize=(min(16.0, width / 100), min(16.0, width / 100) * canvas.shape[0] / width))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas)
    ax.set_axis_off()
    for kpts, dx in ((kpts0, 0), (kpts1, w0 + gap)):
        if len(kpts):
            ax.scatter(kpts[:, 0] + dx, kpts[:, 1], s=1.5, c="#4da6ff", linewidths=0)
    if len(matches):
        p0 = kpts0[matches[:, 0]]
        p1 = kpts1[matches[:, 1]] + np.array([w0 + gap, 0])
        if correct is not None:
            colors = np.where(np.asarray(correct)[:, None], [[0.1, 0.8, 0.1, 0.9]], [[0.9, 0.1, 0.1, 0.9]])
        else:
            values = np.ones(len(matches)) if scores is None else np.clip(scores, 0, 1)
            colors = plt.get_cmap("RdYlGn")(values)
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(np.stack([p0, p1], 1), colors=colors, linewidths=0.7))
    lines = ([title] if title else []) + list(text)
    if lines:
        ax.text(8, 8, "\n".join(lines), color="white", fontsize=9, va="top", ha="left",
                bbox=dict(facecolor="black", alpha=0.6, edgecolor="none", pad=3))
    _save(fig, path)


def plot_latency(num_keypoints: Sequence[int], series: dict[str, Sequence[float]], path: str | os.PathLike,
                 title: str = "") -> None:
    """Latency (ms) against the number of keypoints, one line per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in series.items():
        ax.plot(num_keypoints, values, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(num_keypoints), [str(n) for n in num_keypoints])
    ax.set_xlabel("keypoints per image")
    ax.set_ylabel("latency [ms]")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    _save(fig, path)
