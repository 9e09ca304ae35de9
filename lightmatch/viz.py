"""Pictures: match plots (side by side, lines coloured by confidence or correctness) and benchmark curves."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .defaults import VIZ_MAX_MATCHES
from .errors import ConfigError
from .io.atomic import atomic_output


def _pyplot():
    """matplotlib's pyplot on the Agg backend. When this process imports matplotlib first and MPLCONFIGDIR is not
    set, matplotlib keeps its font cache in a temporary folder removed at exit, not under the home folder (its
    rebuild costs no measurable time)."""
    if "matplotlib" not in sys.modules and "MPLCONFIGDIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="lm-mpl-")
        atexit.register(shutil.rmtree, folder, True)
        os.environ["MPLCONFIGDIR"] = folder
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


PLOT_FORMATS = ("png", "jpg", "jpeg", "pdf", "svg", "webp", "tif", "tiff")


def plot_format(path: str | os.PathLike) -> str:
    """The image format a plot at ``path`` is written in, from its extension (:class:`ConfigError` for others)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise ConfigError(f"{path}: a plot is written as {', '.join('.' + f for f in PLOT_FORMATS)}; "
                          f"give a file name with one of these extensions")
    return suffix


def _save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` to ``path`` atomically: a reader, or a crash, never sees half a plot."""
    try:
        fmt = plot_format(path)
        with atomic_output(path, "plot") as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight", pad_inches=0.05)
    finally:
        _pyplot().close(fig)


MAX_LINES = VIZ_MAX_MATCHES
"""Default cap on the match lines of a plot: all are drawn up to this many, a random subset beyond."""

_GREEN, _RED = (0.1, 0.8, 0.1), (0.95, 0.1, 0.1)


def lines_to_draw(num_matches: int, max_lines: Optional[int] = MAX_LINES, correct: Optional[np.ndarray] = None,
                  scores: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """Indices of the matches a plot draws, in drawing order (the last is drawn on top).

    At most ``max_lines`` (``None`` or ``-1``: all): beyond it, every wrong match is kept and the rest is a
    random subset (seeded, so plots repeat). With ``correct`` ``(M,)`` the wrong matches come last; else, with
    ``scores`` ``(M,)``, the least confident come last.
    """
    index = np.arange(num_matches)
    wrong = np.zeros(num_matches, bool) if correct is None else ~np.asarray(correct, bool)
    if max_lines is not None and max_lines >= 0 and num_matches > max_lines:
        rng = np.random.default_rng(seed)
        bad, good = index[wrong], index[~wrong]
        bad = rng.choice(bad, min(len(bad), max_lines), replace=False)
        good = rng.choice(good, max_lines - len(bad), replace=False)
        index = np.sort(np.concatenate([bad, good]))
    if correct is not None:
        return index[np.argsort(wrong[index], kind="stable")]
    if scores is not None:
        return index[np.argsort(-np.asarray(scores)[index], kind="stable")]
    return index


def _score_range(scores: np.ndarray) -> tuple[float, float]:
    """A colour range fitted to the scores at hand (2nd percentile to the maximum, at least 0.02 wide): a matcher
    whose confidences all lie in 0.92-0.99 still spans the whole colour map."""
    low, high = float(np.percentile(scores, 2)), float(scores.max())
    if high - low < 0.02:
        middle = (low + high) / 2
        low, high = middle - 0.01, middle + 0.01
    return low, high


def _line_style(num_lines: int) -> tuple[float, float]:
    """Width (points) and alpha of match lines: thin and see-through when many, bold when few."""
    crowd = np.sqrt(150 / max(num_lines, 1))
    return float(np.clip(1.3 * crowd, 0.5, 1.6)), float(np.clip(0.9 * crowd, 0.3, 0.9))


def plot_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, path: str | os.PathLike, scores: Optional[np.ndarray] = None,
                 correct: Optional[np.ndarray] = None, title: str = "", text: Sequence[str] = (),
                 max_lines: Optional[int] = MAX_LINES, labels: tuple[str, str] = ("correct", "wrong")) -> None:
    """Draw two images side by side with their matches and save to ``path`` (PNG/JPEG/PDF by extension).

    Args:
        image0, image1: ``(H, W[, 3])`` images.
        kpts0, kpts1: ``(N0, 2)``, ``(N1, 2)`` keypoints in those images' pixels.
        matches: ``(M, 2)`` index pairs.
        scores: ``(M,)`` confidences: lines coloured red (low) to green (high) over a range fitted to them, shown
            by a colour bar; the least confident are drawn on top.
        correct: ``(M,)`` bools: green for correct, red for wrong, drawn on top and bold, with a legend (takes
            precedence over ``scores``).
        title, text: a title and lines of text drawn in the top-left corner.
        max_lines: draw at most this many matches (:func:`lines_to_draw`; ``None`` or ``-1``: all).
        labels: the legend's names of correct and wrong matches (e.g. ``("inlier", "outlier")``).
    """
    plt = _pyplot()
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    image0, image1 = _as_rgb(image0), _as_rgb(image1)
    h0, w0 = image0.shape[:2]
    h1, w1 = image1.shape[:2]
    gap = 10
    canvas = np.full((max(h0, h1), w0 + gap + w1, 3), 255, dtype=np.uint8)
    canvas[:h0, :w0] = image0
    canvas[:h1, w0 + gap:] = image1
    matches = np.asarray(matches).reshape(-1, 2)
    order = lines_to_draw(len(matches), max_lines, correct, scores)
    width_in = min(16.0, canvas.shape[1] / 100)
    image_in = width_in * canvas.shape[0] / canvas.shape[1]
    strip_in = 0.45 if len(order) and (correct is not None or scores is not None) else 0.0  # legend / colour bar
    fig = plt.figure(figsize=(width_in, image_in + strip_in))
    strip = strip_in / (image_in + strip_in)
    ax = fig.add_axes([0, strip, 1, 1 - strip])
    ax.imshow(canvas)
    ax.set_axis_off()
    for kpts, dx in ((kpts0, 0), (kpts1, w0 + gap)):
        if len(kpts):
            ax.scatter(kpts[:, 0] + dx, kpts[:, 1], s=1.5, c="#4da6ff", linewidths=0, alpha=0.7)
    lines = ([title] if title else []) + list(text)
    if len(order) < len(matches):
        lines.append(f"drawn: {len(order)} of {len(matches)} matches"
                     + (f", every {labels[1]} one" if correct is not None and not np.all(correct) else ""))
    if len(order):
        segments = np.stack([kpts0[matches[order, 0]], kpts1[matches[order, 1]] + np.array([w0 + gap, 0])], 1)
        line_width, alpha = _line_style(len(order))
        if correct is not None:
            wrong = ~np.asarray(correct, bool)[order]
            ax.add_collection(LineCollection(segments[~wrong], colors=[(*_GREEN, alpha)], linewidths=line_width,
                                             zorder=2))
            ax.add_collection(LineCollection(segments[wrong], colors=[(*_RED, 1.0)],
                                             linewidths=max(1.5, 2 * line_width), zorder=3))
            num_wrong = int((~np.asarray(correct, bool)).sum())
            handles = [Line2D([], [], color=_GREEN, lw=2, label=f"{labels[0]} ({len(matches) - num_wrong})"),
                       Line2D([], [], color=_RED, lw=2, label=f"{labels[1]} ({num_wrong})")]
            fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, strip / 2), ncol=2, frameon=False,
                       fontsize=9)
        elif scores is None:
            ax.add_collection(LineCollection(segments, colors=[(*_GREEN, alpha)], linewidths=line_width, zorder=2))
        else:
            values = np.asarray(scores, float)
            norm = Normalize(*_score_range(values))
            cmap = plt.get_cmap("RdYlGn")
            colors = cmap(norm(values[order]))
            colors[:, 3] = alpha
            ax.add_collection(LineCollection(segments, colors=colors, linewidths=line_width, zorder=2))
            cax = fig.add_axes([0.3, strip * 0.55, 0.4, strip * 0.25])
            bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal",
                               extend="min" if values.min() < norm.vmin else "neither")
            bar.ax.tick_params(labelsize=8)
            bar.set_label("match confidence", fontsize=8, labelpad=1)
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
