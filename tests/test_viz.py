"""Match plots: wrong matches drawn last (on top), the cap on lines, a colour range fitted to the scores."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import LineCollection

from lightmatch import viz


def test_lines_to_draw_puts_wrong_matches_last_and_respects_the_cap():
    correct = np.ones(1000, bool)
    correct[[3, 500, 998]] = False
    order = viz.lines_to_draw(1000, 300, correct=correct)
    assert len(order) == 300 and len(set(order.tolist())) == 300
    assert order[-3:].tolist() == [3, 500, 998]
    assert correct[order[:-3]].all()
    assert np.array_equal(order, viz.lines_to_draw(1000, 300, correct=correct))  # seeded: plots repeat
    assert len(viz.lines_to_draw(1000, None, correct=correct)) == 1000
    assert len(viz.lines_to_draw(1000, -1)) == 1000
    assert len(viz.lines_to_draw(200, 300)) == 200  # all below the cap
    scores = np.linspace(1, 0, 50)
    assert viz.lines_to_draw(50, 300, scores=scores)[-1] == 49  # the least confident on top


@pytest.fixture
def drawn(monkeypatch):
    """The figure plot_matches would save, instead of saving it."""
    figures = []
    monkeypatch.setattr(viz, "_save", lambda fig, path: figures.append(fig))
    return figures


def _scene(num: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = np.full((120, 160, 3), 128, np.uint8)
    kpts = rng.uniform(0, 120, (num, 2)).astype(np.float32)
    return image, kpts, np.stack([np.arange(num)] * 2, 1)


def test_plot_draws_wrong_matches_on_top_within_the_cap(drawn):
    image, kpts, matches = _scene(500)
    correct = np.ones(500, bool)
    correct[[10, 20]] = False
    viz.plot_matches(image, image, kpts, kpts, matches, "unused.png", correct=correct, max_lines=100)
    ax = drawn[0].axes[0]
    collections = sorted((c for c in ax.collections if isinstance(c, LineCollection)), key=lambda c: c.get_zorder())
    assert sum(len(c.get_segments()) for c in collections) == 100
    top = collections[-1]
    assert len(top.get_segments()) == 2 and np.allclose(top.get_colors()[:, 0], 0.95)  # red, drawn last
    assert min(top.get_linewidths()) > max(collections[0].get_linewidths())
    legend = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert legend == ["correct (498)", "wrong (2)"]
    assert "drawn: 100 of 500 matches" in ax.texts[0].get_text()


def test_plot_line_style_scales_with_count(drawn):
    image, kpts, matches = _scene(1000)
    viz.plot_matches(image, image, kpts, kpts, matches[:20], "few.png", correct=np.ones(20, bool))
    viz.plot_matches(image, image, kpts, kpts, matches, "many.png", correct=np.ones(1000, bool), max_lines=-1)
    (few,), (many,) = ([c for c in fig.axes[0].collections if isinstance(c, LineCollection) and len(c.get_segments())]
                       for fig in drawn)
    assert few.get_linewidths()[0] > many.get_linewidths()[0]
    assert few.get_colors()[0, 3] > many.get_colors()[0, 3]


def test_score_colours_span_a_narrow_range_with_a_colour_bar(drawn):
    image, kpts, matches = _scene(200)
    scores = np.linspace(0.92, 0.99, 200)  # the nearest-neighbour matcher's typical confidences
    viz.plot_matches(image, image, kpts, kpts, matches, "nn.png", scores=scores)
    fig = drawn[0]
    lines = next(c for c in fig.axes[0].collections if isinstance(c, LineCollection))
    reds = lines.get_colors()[:, 0]
    assert reds.max() - reds.min() > 0.5  # from red to green, not one shade
    bar = fig.axes[1]
    assert bar.get_xlabel() == "match confidence"
    low, high = bar.get_xlim()
    assert 0.9 <= low < 0.93 and high == pytest.approx(0.99)


def test_plot_writes_the_lines_in_their_colours_where_the_matches_are(tmp_path):
    """The PNG itself: 10 horizontal matches 10 px apart, the 8th wrong. Down the middle of the gap between the
    two images there are exactly 10 lines, at the matches' rows (110 dpi: 1.1 px per image pixel, plus the 0.05 in
    margin), green but the 8th red; the width is the two images and the gap at that scale."""
    import cv2

    image = np.full((120, 160, 3), 128, np.uint8)
    rows = 10 + 10 * np.arange(10, dtype=np.float32)
    kpts0 = np.stack([np.full(10, 20, np.float32), rows], 1)
    kpts1 = np.stack([np.full(10, 140, np.float32), rows], 1)
    correct = np.arange(10) != 7
    viz.plot_matches(image, image, kpts0, kpts1, np.stack([np.arange(10)] * 2, 1), tmp_path / "m.png",
                     scores=np.linspace(0, 1, 10), correct=correct, text=["a", "b"])
    png = cv2.imread(str(tmp_path / "m.png"))[..., ::-1].astype(int)  # RGB
    scale, margin = 1.1, 0.05 * 110
    assert png.shape[1] == round((160 + 10 + 160) * scale + 2 * margin)
    column = png[:round(120 * scale + margin), png.shape[1] // 2]  # the gap's middle, above the legend
    green = (column[:, 1] - column[:, 0] > 100) & (column[:, 1] - column[:, 2] > 100)
    red = (column[:, 0] - column[:, 1] > 150) & (column[:, 0] - column[:, 2] > 150)
    drawn = np.flatnonzero(green | red)
    runs = np.split(drawn, np.flatnonzero(np.diff(drawn) > 1) + 1)
    assert len(runs) == 10
    assert [bool(red[run].any()) for run in runs] == (~correct).tolist()
    assert not any(green[run].any() and red[run].any() for run in runs)
    centres = np.array([run.mean() for run in runs])
    assert np.allclose(centres, rows * scale + margin, atol=1.5)


def test_plot_without_scores_or_truth_has_no_strip(drawn):
    image, kpts, matches = _scene(30)
    viz.plot_matches(image, image, kpts, kpts, matches, "plain.png")
    viz.plot_matches(image, image, kpts, kpts, matches, "scored.png", scores=np.linspace(0, 1, 30))
    plain, scored = drawn
    assert len(plain.axes) == 1 and not plain.legends and plain.axes[0].get_position().y0 == 0
    assert len(scored.axes) == 2 and scored.axes[0].get_position().y0 > 0
