"""lightmatch.io.store: the rules of the output store, with plain attribute dicts and small random features (no
model). Its lock, its settings check, part files in chunks, consolidation and resume after a run that did not
finish, the store invariant, and the workers' part writer. The SIGKILL tests with real processes are in
test_batch_crash.py and test_store_shards.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import assert_store_invariant

from lightmatch.errors import ConfigError, OutputError
from lightmatch.io import h5
from lightmatch.io import store as S
from lightmatch.io.store import OutputStore, PairIndex
from lightmatch.types import Features, Matches

ATTRS = {"lightmatch_extractor": "test", "lightmatch_extractor_settings": {"max_keypoints": 5}}
MATCH_ATTRS = {"lightmatch_matcher": "nn"}


def features(seed: int, n: int = 5) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.rand(n, 2, generator=g) * 50, torch.rand(n, generator=g), torch.rand(n, 8, generator=g),
                    (64, 48))


MATCHES = Matches(torch.tensor([0, -1, 2, -1, 4]), torch.tensor([0.9, 0.0, 0.8, 0.0, 0.7]))


def parts(folder: Path) -> list[str]:
    """The sealed part files of ``folder``, by name."""
    return sorted(p.name for p in (folder / S.PARTS_DIR).glob("*.h5"))


def test_parts_consolidate_lock_and_stale(tmp_path):
    out = tmp_path / "out"
    store = OutputStore(out, ATTRS, MATCH_ATTRS, chunk=1).open()  # one part per commit
    try:
        store.commit(features={"sub/a.jpg": features(0), "b.jpg": features(1)})
        store.commit(matches={("sub/a.jpg", "b.jpg"): (MATCHES, np.array([True, False, True, False, False]))})
        with pytest.raises(OutputError, match="another lightmatch run"):
            OutputStore(out, ATTRS, MATCH_ATTRS).open()
        assert [name[-4:] for name in parts(out)] == ["f.h5", "m.h5"]
        # a part is a complete hloc-layout file, readable before consolidation
        with h5py.File(out / S.PARTS_DIR / parts(out)[1]) as handle:
            assert handle["matches/sub-a.jpg/b.jpg/matches0"][()].tolist() == [0, -1, 2, -1, 4]
        assert store.has_pair("b.jpg", "sub/a.jpg") and not store.has_pair("b.jpg", "c.jpg")
        # a killed run: parts stay, a temporary file is left over
        (out / S.PARTS_DIR / ".x-0000009-m.h5.tmp").write_bytes(b"junk")
        with pytest.raises(ValueError, match="before the features of c.jpg"):  # the store invariant
            store.commit(matches={("c.jpg", "b.jpg"): (MATCHES, None)})
    finally:
        store.close()  # released without finishing, as by a kill
    assert not (out / "features.h5").exists()
    with OutputStore(out, ATTRS, MATCH_ATTRS) as store:  # the next run consolidates first
        assert not list((out / S.PARTS_DIR).iterdir())
        assert store.has_pair("sub/a.jpg", "b.jpg")
        assert torch.equal(store.read_features("sub/a.jpg").descriptors, features(0).descriptors)
    assert_store_invariant(out)  # finished: no parts folder, no lock file left
    pairs, _ = h5.read_matches(out / "matches.h5", "b.jpg", "sub/a.jpg")
    assert pairs.tolist() == [[0, 0], [2, 2], [4, 4]]
    with h5py.File(out / "matches.h5") as handle:
        assert handle["sub-a.jpg/b.jpg/inliers"][()].tolist() == [True, False, True, False, False]
        assert handle.attrs["lightmatch_matcher"] == "nn"


def test_a_second_writer_waits_for_the_lock_or_fails_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    first = OutputStore(out, ATTRS).open()
    with pytest.raises(OutputError, match=rf"{out}: another lightmatch run \(pid \d+\) is writing"):
        OutputStore(out, ATTRS).open()
    first.commit(features={"a.png": features(0)})
    releaser = threading.Timer(0.3, first.finish)
    releaser.start()
    started = time.monotonic()
    with OutputStore(out, ATTRS, wait=30) as second:  # waits until the first finishes, then sees its work
        assert time.monotonic() - started >= 0.2
        assert second.has_features("a.png")
    releaser.join()
    assert_store_invariant(out)


def test_chunks_seal_after_n_items_and_name_what_they_hold(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with OutputStore(out, ATTRS, MATCH_ATTRS, chunk=3) as store:
        first = store.commit(features={"a.png": features(0)})
        second = store.commit(features={"b.png": features(1)})
        assert first == second and first.name.endswith(".tmp") and parts(out) == []  # one open part
        sealed = store.commit(matches={("a.png", "b.png"): (MATCHES, None)})  # the third item seals it
        assert sealed.name.endswith("-m.h5") and parts(out) == [sealed.name]
        store.commit(features={"c.png": features(2)})
        assert torch.equal(store.read_features("c.png").keypoints, features(2).keypoints)  # from the open part
        assert torch.equal(store.read_features("a.png").keypoints, features(0).keypoints)  # from a sealed part
    assert h5.stored_image_names(out / "features.h5") == ["a.png", "b.png", "c.png"]
    for value, chunk in (("7", 7), ("0", 1), ("many", S.DEFAULT_CHUNK)):
        monkeypatch.setenv(S.CHUNK_ENV, value)
        assert S.default_chunk() == chunk


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    with OutputStore(out, ATTRS, MATCH_ATTRS) as store:
        store.commit(features={"a.png": features(0), "b.png": features(1)},
                     matches={("a.png", "b.png"): (MATCHES, None)})
    other = {**ATTRS, "lightmatch_extractor_settings": {"max_keypoints": 9}}
    with pytest.raises(ConfigError, match=r"features.h5 was made with other extractor settings \(max_keypoints: "
                                          r"stored 5, this run 9\)"):
        OutputStore(out, other, MATCH_ATTRS).open()
    with pytest.raises(ConfigError, match=r"matches.h5 was made with other matcher settings \(matcher: stored nn"):
        OutputStore(out, ATTRS, {"lightmatch_matcher": "lightglue"}).open()
    assert not (out / S.LOCK_FILE).exists()  # a refused run leaves the folder as it found it
    with OutputStore(out, ATTRS, {**MATCH_ATTRS, "lightmatch_verify": "none"}) as store:  # the default, recorded
        assert store.has_pair("a.png", "b.png")
    with OutputStore(out, other, MATCH_ATTRS, overwrite=True) as store:
        assert sorted(Path(p).name for p in store.removed) == ["features.h5", "matches.h5"]
        assert store.feature_names() == [] and not store.has_pair("a.png", "b.png")
        store.commit(features={"a.png": features(3)})
    assert not (out / "matches.h5").exists() and not (out / "shards" / "matches").exists()
    with h5py.File(out / "features.h5") as handle:
        assert h5.feature_groups(handle) == ["a.png"]


def test_a_failed_run_keeps_its_parts_and_an_interrupted_one_finishes(tmp_path):
    """Leaving the block by an error keeps the work as parts for the next run; Ctrl-C (KeyboardInterrupt)
    consolidates on the way out."""
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with OutputStore(out, ATTRS) as store:
            store.commit(features={"a.png": features(0)})
            raise RuntimeError("a bug")
    assert len(parts(out)) == 1 and not (out / "features.h5").exists()
    assert S.unfinished_parts(out / "features.h5") == out / S.PARTS_DIR
    with pytest.raises(KeyboardInterrupt):
        with OutputStore(out, ATTRS) as store:
            assert store.has_features("a.png")  # the parts of the failed run, consolidated on open
            store.commit(features={"b.png": features(1)})
            raise KeyboardInterrupt
    assert S.unfinished_parts(out / "features.h5") is None
    assert_store_invariant(out)
    assert h5.stored_image_names(out / "features.h5") == ["a.png", "b.png"]


def test_a_run_that_wrote_nothing_removes_the_folders_it_made(tmp_path):
    out = tmp_path / "new" / "out"
    OutputStore(out, ATTRS).open().close()
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    OutputStore(tmp_path / "kept", ATTRS).open().close()
    assert (tmp_path / "kept").is_dir() and not list((tmp_path / "kept").iterdir())


def test_pair_index_holds_keys_in_either_spelling_once():
    index = PairIndex.from_arrays(["a.png", "b.png", "c.png"], np.array([[0, 1], [2, 0]]))
    assert "a.png/b.png" in index and "c.png/a.png" in index
    assert "b.png/a.png" not in index and "a.png/d.png" not in index  # membership is by key; has_pair tries both
    index.add("d.png/a.png")
    index.add("d.png/a.png")
    assert "d.png/a.png" in index and len(index) == 3

