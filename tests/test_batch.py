"""Batch pipeline (library level): planning, loader, part files and consolidation, resume, bad images, Ctrl-C.

Runs on small synthetic images with SIFT + nearest neighbour, where the model does not matter.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from helpers import assert_same_stores, assert_store_invariant, make_images

from lightmatch.errors import ConfigError, InputError
from lightmatch.io import h5
from lightmatch.io.pairs import exhaustive_pairs, sequential_pairs
from lightmatch.pipeline.batch import BatchOptions, VerifyOptions, extract_batch, match_batch
from lightmatch.pipeline.events import BatchStart, ImageEvent, PairEvent
from lightmatch.pipeline.loader import PrefetchLoader, extract_loaded, load_for_extractor
from lightmatch.pipeline.plan import plan_pairs, unique_pairs, viz_filename
from lightmatch.types import Features


@functools.lru_cache(maxsize=None)
def models():
    from lightmatch.models.factory import load_extractor, load_matcher

    return (load_extractor("sift", max_keypoints=200, resize=None, device="cpu"),
            load_matcher("nn", features="sift", device="cpu"))


@pytest.fixture
def folder(tmp_path) -> tuple[Path, list[str]]:
    names = make_images(tmp_path / "images", 6)
    return tmp_path / "images", names


# ------------------------------------------------------------------------------------------------ planning ---

def test_unique_pairs_and_viz_names():
    kept, dropped = unique_pairs([("a", "b"), ("b", "a"), ("a", "a"), ("a", "c"), ("a", "b")])
    assert kept == [("a", "b"), ("a", "c")]
    assert [d[:2] for d in dropped] == [("b", "a"), ("a", "a"), ("a", "b")]
    assert viz_filename("x/a.jpg", "b.png") == "x-a_b_matches.png"


def _simulate(steps, pairs, capacity):
    """Replay a plan: every pair finds both images loaded; at most capacity + 2 images are held."""
    held: set[str] = set()
    extracted: list[str] = []
    for step, (a, b) in zip(steps, pairs):
        for load in step.loads:
            assert load.name not in held
            held.add(load.name)
            if load.extract:
                extracted.append(load.name)
        assert {a, b} <= held
        assert len(held) <= capacity + 2
        held -= set(step.evict)
    assert not held  # everything dropped after its last pair
    return extracted


@pytest.mark.parametrize("capacity", [1, 3, 256])
def test_plan_extracts_each_image_once(capacity):
    names = [f"{i}" for i in range(12)]
    for pairs in (exhaustive_pairs(names), sequential_pairs(names, 3, loop=True)):
        steps, jobs = plan_pairs(pairs, lambda n: False, False, capacity)
        extracted = _simulate(steps, pairs, capacity)
        assert sorted(extracted) == sorted(names)  # once each, however many pairs and evictions
        assert [j.name for j in jobs] == extracted  # decode jobs only for extraction, in order
    # images already stored are read back, never decoded (unless plots need them)
    steps, jobs = plan_pairs(exhaustive_pairs(names), lambda n: n in {"0", "1"}, False, 256)
    assert {j.name for j in jobs} == set(names) - {"0", "1"}
    steps, jobs = plan_pairs(exhaustive_pairs(names), lambda n: True, True, 2)
    assert not any(j.extract for j in jobs) and len(jobs) == sum(len(s.loads) for s in steps)


def test_plan_keeps_features_until_last_pair():
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    steps, _ = plan_pairs(pairs, lambda n: False, False, 256)
    assert [s.evict for s in steps] == [[], ["a"], ["b", "c"]]


# -------------------------------------------------------------------------------------------------- loader ---

def test_prefetch_loader_order_errors_and_prefetch(tmp_path):
    started: list[int] = []
    lock = threading.Lock()

    def load(job):
        with lock:
            started.append(job)
        if job == 3:
            raise InputError("bad 3")
        if job == 4:
            raise RuntimeError("boom")
        time.sleep(0.01 * (job % 2))
        return job * 10

    with PrefetchLoader(list(range(8)), load, workers=2, prefetch=3) as loader:
        time.sleep(0.1)
        assert len(started) == 3  # never more than `prefetch` ahead of the consumer
        assert loader.get(0) == 0 and loader.get(1) == 10 and loader.get(2) == 20
        assert isinstance(loader.get(3), InputError)
        err = loader.get(4)
        assert isinstance(err, InputError) and "RuntimeError" in str(err)
        loader.skip(5)
        assert loader.get(6) == 60


def test_worker_preprocessing_equals_extract(folder):
    from conftest import cached_aliked

    from lightmatch.io.images import load_image

    image_dir, names = folder
    extractor = cached_aliked(max_keypoints=128, resize=160)
    loaded = load_for_extractor(image_dir / names[0], names[0], extractor)
    assert loaded.scale is not None and loaded.tensor.shape[-2:] == (120, 160)
    a, b = extractor.extract(load_image(image_dir / names[0])), extract_loaded(extractor, loaded)
    for key in ("keypoints", "scores", "descriptors"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    assert a.image_size == b.image_size == (256, 192)


# -------------------------------------------------------------------------------------------------- HDF5 ---

def test_empty_features_round_trip(tmp_path):
    feats = Features.from_numpy(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 128)), (64, 48))
    h5.write_features(tmp_path / "f.h5", {"blank.png": feats})
    back = h5.read_features(tmp_path / "f.h5", "blank.png")
    assert back.keypoints.shape == (0, 2) and back.descriptors.shape == (0, 128)


# ---------------------------------------------------------------------------------------- batches, resume ---

def test_match_batch_events_resume_and_identical_result(folder, tmp_path):
    image_dir, names = folder
    extractor, matcher = models()
    pairs = exhaustive_pairs(names)
    verify = VerifyOptions("homography", seed=3)
    events = []
    full = match_batch(image_dir, pairs + [(names[1], names[0])], tmp_path / "full", extractor, matcher,
                       BatchOptions(verify=verify), on_event=events.append)
    assert full.ok and full.pairs_matched == 15 and full.pairs_ignored == 1 and full.images_extracted == 6
    assert isinstance(events[0], BatchStart) and events[0].pairs_todo == 15
    ok = [e for e in events if isinstance(e, PairEvent) and e.status == "ok"]
    assert len(ok) == 15 and all(e.matches > 0 and 0 < e.inliers <= e.matches for e in ok)
    assert sum(isinstance(e, ImageEvent) and e.status == "extracted" for e in events) == 6
    summary = full.to_json()
    assert summary["pairs_per_s"] > 0 and set(summary["time_s"]) >= {"decode", "extract", "match", "write"}

    # partial run, then the full list: only the rest is done, the files equal the uninterrupted run's
    part = match_batch(image_dir, pairs[:4], tmp_path / "resumed", extractor, matcher, BatchOptions(verify=verify))
    assert part.pairs_matched == 4 and part.images_extracted == 5
    events = []
    rest = match_batch(image_dir, pairs, tmp_path / "resumed", extractor, matcher, BatchOptions(verify=verify),
                       on_event=events.append)
    assert (rest.pairs_skipped, rest.pairs_matched, rest.images_extracted, rest.images_reused) == (4, 11, 1, 5)
    assert sum(isinstance(e, PairEvent) and e.status == "skipped" for e in events) == 4
    assert_same_stores(tmp_path / "full", tmp_path / "resumed")
    assert_store_invariant(tmp_path / "full")
    assert_store_invariant(tmp_path / "resumed")

    # a tiny feature cache (features dropped and read back from part files) changes nothing
    small = match_batch(image_dir, pairs, tmp_path / "small_cache", extractor, matcher,
                        BatchOptions(verify=verify, cache_images=1, workers=1, prefetch=1))
    assert (small.images_extracted, small.images_reused) == (6, 0) and small.times["read"] > 0
    assert_same_stores(tmp_path / "full", tmp_path / "small_cache")

    # extract first, then match: features reused, same files
    ext = extract_batch(image_dir, names, tmp_path / "two_steps", extractor)
    assert ext.ok and ext.images_extracted == 6
    again = match_batch(image_dir, pairs, tmp_path / "two_steps", extractor, matcher, BatchOptions(verify=verify))
    assert again.images_extracted == 0 and again.images_reused == 6
    assert_same_stores(tmp_path / "full", tmp_path / "two_steps")


def test_settings_mismatch_refused_unless_overwrite(folder, tmp_path):
    from lightmatch.models.factory import load_extractor

    image_dir, names = folder
    extractor, matcher = models()
    pairs = exhaustive_pairs(names[:3])
    match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher)
    other = load_extractor("sift", max_keypoints=100, resize=None, device="cpu")
    with pytest.raises(ConfigError, match="features.h5 was made with other extractor settings.*max_keypoints"):
        match_batch(image_dir, pairs, tmp_path / "out", other, matcher)
    with pytest.raises(ConfigError, match="matches.h5 was made with other matcher settings.*verify"):
        match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher,
                    BatchOptions(verify=VerifyOptions("fundamental")))
    events = []
    summary = match_batch(image_dir, pairs, tmp_path / "out", other, matcher, BatchOptions(overwrite=True),
                          on_event=events.append)
    assert summary.pairs_matched == 3 and len(events[0].removed) == 2
    assert len(h5.read_features(tmp_path / "out/features.h5", names[0])) <= 100


def test_bad_images_fail_only_their_pairs(folder, tmp_path):
    image_dir, names = folder
    (image_dir / "zero.png").write_bytes(b"")
    (image_dir / "text.jpg").write_text("not an image")
    (image_dir / "trunc.png").write_bytes((image_dir / names[0]).read_bytes()[:500])
    bad = ["zero.png", "text.jpg", "trunc.png", "missing.png"]
    extractor, matcher = models()
    pairs = exhaustive_pairs(names[:3] + bad)
    events = []
    summary = match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher, on_event=events.append)
    assert summary.pairs_matched == 3 and summary.pairs_failed == len(pairs) - 3
    assert summary.images_failed == 4 and set(summary.failed_images) == set(bad)
    assert "empty file" in summary.failed_images["zero.png"] and "no such file" in summary.failed_images["missing.png"]
    failed = [e for e in events if isinstance(e, ImageEvent) and e.status == "failed"]
    assert sorted(e.name for e in failed) == sorted(bad)  # each bad image reported once
    assert not summary.ok
    assert h5.stored_image_names(tmp_path / "out/features.h5") == sorted(names[:3])


def test_keyboard_interrupt_saves_and_resumes(folder, tmp_path):
    image_dir, names = folder
    extractor, matcher = models()
    pairs = sequential_pairs(names, 2)
    match_batch(image_dir, pairs, tmp_path / "full", extractor, matcher)

    def stop_after_three(event):
        if isinstance(event, PairEvent) and event.status == "ok":
            stop_after_three.count += 1
            if stop_after_three.count == 3:
                raise KeyboardInterrupt
    stop_after_three.count = 0
    summary = match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher, on_event=stop_after_three)
    assert summary.interrupted and summary.pairs_matched == 3 and not summary.ok
    # saved and consolidated: the three pairs are readable now
    assert_store_invariant(tmp_path / "out")
    with h5py.File(tmp_path / "out/matches.h5") as handle:
        assert len(h5.match_groups(handle)) == 3
    rest = match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher)
    assert rest.pairs_skipped == 3 and rest.pairs_matched == len(pairs) - 3
    assert_same_stores(tmp_path / "full", tmp_path / "out")


def test_viz_dir_plots_every_pair(folder, tmp_path):
    image_dir, names = folder
    extractor, matcher = models()
    pairs = [(names[0], names[1]), (names[1], names[2])]
    summary = match_batch(image_dir, pairs, tmp_path / "out", extractor, matcher,
                          BatchOptions(VerifyOptions("homography"), viz_dir=tmp_path / "viz"))
    assert summary.ok and summary.times["viz"] > 0
    for a, b in pairs:
        plot = cv2.imread(str(tmp_path / "viz" / viz_filename(a, b)))
        assert plot is not None and plot.shape[1] > 256


def test_no_output_folder_keeps_only_events_and_plots(folder, tmp_path, monkeypatch):
    """No output folder: the stores live in a temporary folder, removed at the end; the summary names no files."""
    import tempfile

    image_dir, names = folder
    extractor, matcher = models()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    pairs = [(names[0], names[1]), (names[1], names[2])]
    events = []
    summary = match_batch(image_dir, pairs, None, extractor, matcher, BatchOptions(viz_dir=tmp_path / "viz"),
                          events.append)
    assert summary.ok and summary.pairs_matched == 2 and summary.features_path is summary.matches_path is None
    assert [(e.name0, e.name1) for e in events if isinstance(e, PairEvent) and e.status == "ok"] == pairs
    assert len(list((tmp_path / "viz").glob("*.png"))) == 2 and not list((tmp_path / "tmp").iterdir())


def test_batched_pairs_give_the_same_matches(tmp_path):
    """--batch-pairs: LightGlue matches several pairs padded and masked; the stores hold the same matches as one by
    one (scores equal up to the float rounding of padded sums), and every pair's event is reported."""
    from lightmatch.models.factory import load_extractor, load_matcher

    names = make_images(tmp_path / "images", 5, size=(320, 240))
    extractor = load_extractor("aliked", max_keypoints=200, resize=None, device="cpu")
    matcher = load_matcher("lightglue", features="aliked", device="cpu")
    pairs = exhaustive_pairs(names)
    one = match_batch(tmp_path / "images", pairs, tmp_path / "one", extractor, matcher)
    events = []
    many = match_batch(tmp_path / "images", pairs, tmp_path / "many", extractor, matcher,
                       BatchOptions(batch_pairs=4), on_event=events.append)
    assert one.pairs_matched == many.pairs_matched == len(pairs)
    assert [(e.name0, e.name1) for e in events if isinstance(e, PairEvent)] == pairs
    for folder in ("one", "many"):
        assert_store_invariant(tmp_path / folder)
    for a, b in pairs:
        m_one, s_one = h5.read_matches(tmp_path / "one/matches.h5", a, b)
        m_many, s_many = h5.read_matches(tmp_path / "many/matches.h5", a, b)
        np.testing.assert_array_equal(m_one, m_many)
        np.testing.assert_allclose(s_one, s_many, atol=1e-4)
