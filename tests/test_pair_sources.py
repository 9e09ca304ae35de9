"""Pair sources (lightmatch.pair_sources): a pairs file or stdin, exhaustive, sequential (window, loop),
retrieval and sequential plus retrieval, and the settings each refuses. No model is loaded: retrieval reads a
user's global descriptors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lightmatch.errors import ConfigError, InputError
from lightmatch.pair_sources import SEQUENTIAL_WINDOW, PairSource, RetrievalSettings, source_pairs
from lightmatch.retrieval.store import write_global


def touch_images(folder, names):
    """Empty files with image names: enough for listing and pairing (nothing here decodes them)."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return sorted(names)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    return root, touch_images(root, [f"f{i:02d}.jpg" for i in range(8)])


def test_exhaustive(images):
    root, names = images
    pairs = source_pairs(PairSource(str(root), mode="exhaustive")).pairs
    assert len(pairs) == 8 * 7 // 2
    assert pairs[:3] == [("f00.jpg", "f01.jpg"), ("f00.jpg", "f02.jpg"), ("f00.jpg", "f03.jpg")]


def test_sequential_default_window_and_loop(images):
    root, names = images
    pairs = source_pairs(PairSource(str(root), mode="sequential")).pairs
    assert SEQUENTIAL_WINDOW == 5 and pairs[:5] == [("f00.jpg", f"f0{j}.jpg") for j in range(1, 6)]
    assert ("f00.jpg", "f06.jpg") not in pairs and ("f07.jpg", "f00.jpg") not in pairs
    looped = source_pairs(PairSource(str(root), mode="sequential", window=1, loop=True)).pairs
    assert looped == [(a, b) for a, b in zip(names, names[1:] + names[:1])]


def test_given_names_replace_the_listing(images):
    root, _ = images
    found = source_pairs(PairSource(str(root), mode="exhaustive"), names=["f03.jpg", "f01.jpg", "f03.jpg"])
    assert found.pairs == [("f03.jpg", "f01.jpg")] and found.retrieval is None and found.failed_images == {}


def test_pairs_file_and_stdin(images, monkeypatch):
    root, _ = images
    pairs_file = root.parent / "pairs.txt"
    pairs_file.write_text(f"# comment\n./f01.jpg {root / 'f02.jpg'}\nf02.jpg f01.jpg extra fields\n")
    want = [("f01.jpg", "f02.jpg"), ("f02.jpg", "f01.jpg")]  # normalised, kept as written
    assert source_pairs(PairSource(str(root), pairs_file=str(pairs_file))).pairs == want
    monkeypatch.setattr("sys.stdin", io.StringIO("f05.jpg f06.jpg\n"))
    assert source_pairs(PairSource(str(root), pairs_file="-")).pairs == [("f05.jpg", "f06.jpg")]


def test_bad_input_names_the_file(tmp_path, images):
    root, _ = images
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'}: no such image directory"):
        source_pairs(PairSource(str(tmp_path / "nope"), mode="exhaustive"))
    bad = tmp_path / "bad.txt"
    bad.write_text("f01.jpg\n")
    with pytest.raises(InputError, match=f"{bad}:1: expected two image names"):
        source_pairs(PairSource(str(root), pairs_file=str(bad)))
    with pytest.raises(InputError, match="missing.txt"):
        source_pairs(PairSource(str(root), pairs_file=str(tmp_path / "missing.txt")))


def test_empty_folder_gives_no_pairs(tmp_path):
    assert source_pairs(PairSource(str(tmp_path), mode="exhaustive")).pairs == []
    assert source_pairs(PairSource(str(tmp_path), mode="sequential", loop=True)).pairs == []


@pytest.mark.parametrize("kwargs, message", [
    ({}, "not neither"),
    ({"pairs_file": "p.txt", "mode": "exhaustive"}, "not both"),
    ({"mode": "random"}, "unknown mode 'random'"),
    ({"mode": "exhaustive", "window": 3}, "window and a loop are for the sequential mode"),
    ({"mode": "exhaustive", "loop": True}, "window and a loop are for the sequential mode"),
    ({"mode": "sequential", "window": 0}, "window must be >= 1, got 0"),
    ({"mode": "exhaustive", "retrieval": RetrievalSettings(num_matched=3)},
     "num_matched does not go with the exhaustive mode"),
    ({"pairs_file": "p.txt", "retrieval": RetrievalSettings(codebook="c.npz")}, "codebook does not go with a pairs"),
    ({"mode": "retrieval", "retrieval": RetrievalSettings(sequential_k=3)},
     "sequential_k does not go with the retrieval mode"),
    ({"mode": "sequential", "retrieval": RetrievalSettings(sequential_k=3, num_matched=4)},
     "num_matched does not go with the sequential mode"),
    ({"mode": "sequential", "retrieval": RetrievalSettings(search="faiss")},
     "search does not go with the sequential mode"),
])
def test_refused_sources(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PairSource("imgs", **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_matched": 0}, "num_matched must be >= 1, got 0"),
    ({"query_dir": "q"}, "query_dir and db_dir go together"),
    ({"codebook": "c.npz", "global_features": "g.h5"}, "global_features replaces them"),
])
def test_refused_retrieval_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RetrievalSettings(**kwargs)


def test_retrieved_per_image_and_extractor_need():
    assert PairSource("i", mode="exhaustive").retrieved_per_image is None
    assert PairSource("i", mode="sequential").retrieved_per_image is None
    assert PairSource("i", mode="retrieval").retrieved_per_image == 10  # NUM_MATCHED
    hybrid = PairSource("i", mode="sequential", retrieval=RetrievalSettings(sequential_k=3))
    assert hybrid.retrieved_per_image == 3 and hybrid.needs_extractor
    own = PairSource("i", mode="retrieval", retrieval=RetrievalSettings(global_features="g.h5"))
    assert not own.needs_extractor and not PairSource("i", mode="exhaustive").needs_extractor


@pytest.fixture
def global_features(images):
    """Global descriptors on a line: each image's nearest neighbours are the images next to it in name order,
    except f00 whose nearest is f07 (a loop closure)."""
    root, names = images
    angles = {name: 0.1 * i for i, name in enumerate(names)}
    angles["f00.jpg"] = 0.1 * 7.5
    path = root.parent / "global-feats.h5"
    write_global(path, {n: np.array([np.cos(a), np.sin(a), 0.0]) for n, a in angles.items()}, {})
    return root, names, str(path)


def test_retrieval_with_global_features(global_features):
    root, names, path = global_features
    source = PairSource(str(root), mode="retrieval", retrieval=RetrievalSettings(num_matched=1, global_features=path))
    found = source_pairs(source)  # no extractor needed, a temporary store
    assert found.retrieval is not None and found.retrieval.global_path == path and found.failed_images == {}
    assert {frozenset(p) for p in found.pairs} >= {frozenset(("f00.jpg", "f07.jpg")), frozenset(("f01.jpg", "f02.jpg"))}
    assert ("f00.jpg", "f01.jpg") not in found.pairs and ("f01.jpg", "f00.jpg") not in found.pairs


def test_sequential_plus_retrieval_keeps_the_default_window(global_features):
    """--pairs-mode sequential --retrieval K without --window: the window of SEQUENTIAL_WINDOW images, plus the
    retrieved loop closure."""
    root, names, path = global_features
    settings = RetrievalSettings(sequential_k=1, global_features=path)
    found = source_pairs(PairSource(str(root), mode="sequential", retrieval=settings))
    window = source_pairs(PairSource(str(root), mode="sequential")).pairs
    assert found.pairs[:len(window)] == window
    assert {frozenset(p) for p in found.pairs} - {frozenset(p) for p in window} == {frozenset(("f00.jpg", "f07.jpg"))}


def test_query_and_database_folders(tmp_path):
    root = tmp_path / "imgs"
    touch_images(root, ["db/a.jpg", "db/b.jpg", "q/x.jpg"])
    path = tmp_path / "g.h5"
    write_global(path, {"db/a.jpg": np.array([1.0, 0.0]), "db/b.jpg": np.array([0.0, 1.0]),
                        "q/x.jpg": np.array([0.1, 1.0])}, {})
    settings = RetrievalSettings(num_matched=1, query_dir="q", db_dir="db", global_features=str(path))
    assert source_pairs(PairSource(str(root), mode="retrieval", retrieval=settings)).pairs == [("q/x.jpg", "db/b.jpg")]
    missing = RetrievalSettings(query_dir="q", db_dir="nope", global_features=str(path))
    with pytest.raises(InputError, match=f"nope: no such folder under {root}"):
        source_pairs(PairSource(str(root), mode="retrieval", retrieval=missing))


def test_retrieval_by_our_descriptors_needs_an_extractor(images):
    root, _ = images
    with pytest.raises(ConfigError, match="need an extractor"):
        source_pairs(PairSource(str(root), mode="retrieval"))
