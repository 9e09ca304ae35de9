"""The sharded store (lightmatch.io.shards): hloc reads its top files through external links with h5py alone; a
SIGKILL at the shard rename, the index append or the top-file replace, then a resume, gives the same stores as an
uninterrupted run; ``store check`` finds a truncated shard and ``--drop`` makes the next run redo exactly its
pairs; a single-file store is upgraded without loss; ``store compact`` equals what the sharded store reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import assert_store_invariant, store_contents

from lightmatch.cli import main
from lightmatch.io import h5, shards
from lightmatch.io.store import OutputStore
from lightmatch.types import Features, Matches

FEATURE_ATTRS = {"lightmatch_extractor": "synthetic"}
MATCH_ATTRS = {"lightmatch_extractor": "synthetic", "lightmatch_matcher": "synthetic"}
NAMES = [f"seq/img{i:02d}.jpg" for i in range(8)]
PAIRS = [(NAMES[i], NAMES[j]) for i in range(8) for j in range(i + 1, min(i + 3, 8))]  # 13 pairs


def features(name: str) -> Features:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return Features.from_numpy(rng.random((12, 2), dtype=np.float32) * 100, rng.random(12, dtype=np.float32),
                               rng.random((12, 8), dtype=np.float32), (100, 80))


def matches(name0: str, name1: str) -> tuple[Matches, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{name0}|{name1}".encode()))
    m0 = torch.from_numpy(rng.integers(-1, 12, 12))
    return Matches(m0, torch.from_numpy(rng.random(12, dtype=np.float32))), rng.random(12) > 0.5


def run(folder: Path, pairs: list[tuple[str, str]], chunk: int = 2) -> int:
    """A batch in miniature: every pair not stored yet (with its images' features), in parts of ``chunk`` items."""
    done = 0
    with OutputStore(folder, FEATURE_ATTRS, MATCH_ATTRS, chunk=chunk) as store:
        for name0, name1 in pairs:
            if store.has_pair(name0, name1):
                continue
            new = {n: features(n) for n in (name0, name1) if not store.has_features(n)}
            store.commit(features=new, matches={(name0, name1): matches(name0, name1)})
            done += 1
    return done


WRITER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_store_shards import PAIRS, run
run(__import__('pathlib').Path(sys.argv[1]), PAIRS[:int(sys.argv[2])])
"""


def run_process(folder: Path, count: int, crash: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != shards.CRASH_ENV}
    if crash:
        env[shards.CRASH_ENV] = crash
    return subprocess.run([sys.executable, "-c", WRITER, str(folder), str(count)], env=env, timeout=120).returncode


def assert_same(a: Path, b: Path) -> None:
    for name in ("features.h5", "matches.h5"):
        ca, cb = store_contents(a / name), store_contents(b / name)
        assert ca.keys() == cb.keys(), name
        for key in ca:
            assert np.array_equal(ca[key], cb[key]) if key != "@attrs" else ca[key] == cb[key], f"{name}:{key}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ref") / "out"
    assert run(folder, PAIRS) == len(PAIRS)
    return folder


def hloc_get_matches(path: Path, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """hloc's get_matches, as it reads a file: h5py only, ``pair in hfile`` in both orders."""
    with h5py.File(str(path), "r", libver="latest") as hfile:
        pair, reverse = f"{name0.replace('/', '-')}/{name1.replace('/', '-')}", False
        if pair not in hfile:
            pair, reverse = f"{name1.replace('/', '-')}/{name0.replace('/', '-')}", True
        m0, s0 = hfile[pair]["matches0"].__array__(), hfile[pair]["matching_scores0"].__array__()
    idx = np.where(m0 != -1)[0]
    out = np.stack([idx, m0[idx]], -1)
    return (np.flip(out, -1) if reverse else out), s0[idx]


def test_hloc_reads_the_top_files_through_external_links(reference, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    os.rename(reference, moved)  # links are relative: the folder can move
    try:
        monkeypatch.chdir(tmp_path)  # and are resolved against the top file's folder, not the working directory
        with h5py.File(moved / "matches.h5", "r") as top:
            link = top["seq-img00.jpg"].get("seq-img01.jpg", getlink=True)
            assert isinstance(link, h5py.ExternalLink) and link.filename.startswith("shards/")
        for name0, name1 in PAIRS:
            m, _ = matches(name0, name1)
            m0 = m.matches0.numpy()
            expected = np.stack([np.nonzero(m0 > -1)[0], m0[m0 > -1]], -1)
            for a, b, flip in ((name0, name1, False), (name1, name0, True)):
                got, scores = hloc_get_matches(moved / "matches.h5", a, b)
                assert np.array_equal(got, expected[:, ::-1] if flip else expected)
            assert np.array_equal(h5.read_matches(moved / "matches.h5", name0, name1)[0], expected)
        with h5py.File(moved / "features.h5", "r") as top:  # hloc's get_keypoints: hfile[name]["keypoints"]
            assert np.array_equal(top[NAMES[3]]["keypoints"].__array__(), features(NAMES[3]).keypoints.numpy())
        assert h5.stored_image_names(moved / "features.h5") == sorted(NAMES)
    finally:
        os.rename(moved, reference)


@pytest.mark.parametrize("point", ["shard-rename", "index-append", "top-replace"])
def test_sigkill_while_consolidating_then_resume_is_equal(reference, tmp_path, point):
    out = tmp_path / "out"
    run(out, PAIRS[:5])  # an earlier run: the killed one adds to a store (its spare top files in use)
    assert run_process(out, 11, crash=point) == -9
    for name in ("features.h5", "matches.h5"):  # whatever the kill left is complete and readable
        with h5py.File(out / name, "r") as handle:
            for key in (h5.feature_groups(handle) if name == "features.h5" else h5.match_groups(handle)):
                assert handle[key][("keypoints" if name == "features.h5" else "matches0")].shape == (12,) + (
                    (2,) if name == "features.h5" else ())
    assert run_process(out, len(PAIRS)) == 0
    assert_same(reference, out)
    assert_store_invariant(out)
    assert not list((out / "shards").glob(".*.work")) and not list((out / "shards").glob(".*.tmp"))


def test_store_check_finds_a_truncated_shard_and_the_next_run_redoes_its_pairs(reference, tmp_path):
    out = tmp_path / "out"
    with OutputStore(out, FEATURE_ATTRS, MATCH_ATTRS) as store:  # the features first: later shards hold pairs only
        store.commit(features={n: features(n) for n in NAMES})
    run(out, PAIRS)
    victim = out / shards.shard_names(out)[3]
    with h5py.File(victim, "r") as part:
        lost = set(h5.match_groups(part["matches"]))
        assert lost and not len(part["features"])  # a shard with pairs only
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    result = CliRunner().invoke(main, ["store", "check", str(out)])
    assert result.exit_code == 1 and f"damaged: {victim}" in result.output, result.output
    result = CliRunner().invoke(main, ["store", "check", str(out), "--drop", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["dropped"] == [str(victim)], result.output
    assert CliRunner().invoke(main, ["store", "check", str(out)]).exit_code == 0
    with OutputStore(out, FEATURE_ATTRS, MATCH_ATTRS) as store:
        missing = {h5.names_to_pair(a, b) for a, b in PAIRS if not store.has_pair(a, b)}
    assert missing == lost
    assert run(out, PAIRS) == len(lost)
    assert_same(reference, out)


def test_single_file_store_is_read_then_upgraded_without_loss(reference, tmp_path):
    out = tmp_path / "old"
    old = PAIRS[:6]
    h5.write_features(out / "features.h5", {n: features(n) for pair in old for n in pair}, FEATURE_ATTRS)
    with h5py.File(out / "matches.h5", "w") as handle:  # the layout before shards
        h5.set_attrs(handle, MATCH_ATTRS)
        for a, b in old:
            m, inliers = matches(a, b)
            h5.put_matches(handle, a, b, m, inliers)
    before = {name: store_contents(out / name) for name in ("features.h5", "matches.h5")}
    with OutputStore(out, FEATURE_ATTRS, MATCH_ATTRS) as store:  # read as it is
        assert all(store.has_pair(a, b) for a, b in old) and not store.has_pair(*PAIRS[6])
    assert not (out / "shards").exists() and store_contents(out / "features.h5").keys() == before["features.h5"].keys()
    assert run(out, PAIRS) == len(PAIRS) - len(old)  # the first write upgrades it
    with h5py.File(out / "matches.h5", "r") as handle:
        assert shards.is_sharded(handle)
    for name in ("features.h5", "matches.h5"):
        now = store_contents(out / name)
        for key, value in before[name].items():
            assert np.array_equal(now[key], value) if key != "@attrs" else now[key] == value, key
    assert (out / "shards/00000000-legacy-matches.h5").stat().st_nlink == 1  # renamed by a link, not copied
    assert_same(reference, out)
    assert_store_invariant(out)


def test_compact_equals_the_sharded_store_and_info_counts(reference, tmp_path):
    result = CliRunner().invoke(main, ["store", "compact", str(reference), "-o", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    for name in ("features.h5", "matches.h5"):
        with h5py.File(tmp_path / "plain" / name, "r") as handle:
            assert not shards.is_sharded(handle)
            assert all(not isinstance(handle.get(k, getlink=True), h5py.ExternalLink) for k in handle)
    assert_same(reference, tmp_path / "plain")
    assert not (reference / ".lightmatch.lock").exists()
    info = json.loads(CliRunner().invoke(main, ["store", "info", str(reference), "--json"]).output)
    assert (info["layout"], info["images"], info["pairs"], info["parts"]) == ("sharded", 8, 13, 0)
    assert info["shards"] == len(shards.shard_names(reference)) > 1
    assert info["settings"]["matches"]["lightmatch_matcher"] == "synthetic"
    result = CliRunner().invoke(main, ["store", "info", str(tmp_path / "plain")])
    assert result.exit_code == 0 and "single-file store, 8 images, 13 pairs, 0 shards" in result.output


def test_a_reader_holding_an_old_top_file_keeps_it_unchanged(tmp_path):
    out = tmp_path / "out"
    run(out, PAIRS[:3])
    with h5py.File(out / "matches.h5", "r") as reader:  # generation 1, open across two updates
        run(out, PAIRS[:6])  # generation 1 becomes the spare
        run(out, PAIRS[:9])  # the spare is held open: the update works on a copy of the top file instead
        assert len(h5.match_groups(reader)) == 3
    with h5py.File(out / "matches.h5", "r") as handle:
        assert len(h5.match_groups(handle)) == 9
    assert run(out, PAIRS) == len(PAIRS) - 9  # and the spare machinery goes on from there
