"""lightmatch.io.maintenance: what ``lightmatch store info|check|compact`` do, called directly on small stores
written through the OutputStore (no model). The CLI round trip on a real run is in test_store_shards.py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from lightmatch.errors import InputError, OutputError
from lightmatch.io import h5, shards
from lightmatch.io.maintenance import check_store, compact_store, store_info
from lightmatch.io.store import PARTS_DIR, OutputStore
from lightmatch.types import Features, Matches

ATTRS = {"lightmatch_extractor": "test"}
MATCH_ATTRS = {"lightmatch_matcher": "nn"}
MATCHES = Matches(torch.tensor([1, -1, 0]), torch.tensor([0.9, 0.0, 0.5]))


def features(seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.rand(3, 2, generator=g) * 40, torch.rand(3, generator=g), torch.rand(3, 4, generator=g),
                    (40, 30))


@pytest.fixture
def store(tmp_path):
    """A finished sharded store: three images (one in a subfolder), two pairs, in three shards."""
    out = tmp_path / "out"
    with OutputStore(out, ATTRS, MATCH_ATTRS, chunk=1) as writer:
        writer.commit(features={"sub/a.jpg": features(0), "b.jpg": features(1), "c.jpg": features(2)})
        writer.commit(matches={("sub/a.jpg", "b.jpg"): (MATCHES, np.array([True, False, True]))})
        writer.commit(matches={("b.jpg", "c.jpg"): (MATCHES, None)})
    return out


def test_info_counts_and_settings(store):
    info = store_info(store)
    assert (info.layout, info.images, info.pairs, info.parts) == ("sharded", 3, 2, 0)
    assert info.shards == len(shards.shard_names(store)) >= 2
    assert info.size_bytes == sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert info.settings["features"]["lightmatch_extractor"] == "test"
    assert info.settings["matches"]["lightmatch_matcher"] == "nn"
    assert shards.LAYOUT_ATTR not in info.settings["matches"]  # the layout is info.layout, not a setting
    (store / PARTS_DIR).mkdir()
    (store / PARTS_DIR / "0001-f.h5").write_bytes(b"")  # a part left by a run that did not finish
    assert store_info(store).parts == 1


def test_info_of_a_single_file_store(tmp_path):
    h5.write_features(tmp_path / "features.h5", {"a.jpg": features(0)}, ATTRS)
    info = store_info(tmp_path)
    assert (info.layout, info.images, info.pairs, info.shards) == ("single-file", 1, 0, 0)
    assert "matches" not in info.settings


def test_not_an_output_folder(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'}: not an output folder"):
        store_info(tmp_path / "nope")
    with pytest.raises(InputError, match=f"{tmp_path}: holds no features.h5"):
        check_store(tmp_path)
    (tmp_path / "features.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=rf"{tmp_path / 'features.h5'}: not a readable HDF5 file .*store check"):
        store_info(tmp_path)


def test_check_of_a_sound_store(store):
    result = check_store(store)
    assert result.ok and result.damaged == [] and result.dropped == []
    assert (result.shards_checked, result.items_checked) == (len(shards.shard_names(store)), 3 + 2)


def damage_a_pair_shard(folder):
    """Truncate the shard holding pair b.jpg/c.jpg; returns its path."""
    for name in shards.shard_names(folder):
        with h5py.File(folder / name, "r") as handle:
            if "b.jpg/c.jpg" in set(h5.match_groups(handle["matches"])):
                victim = folder / name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim


def test_check_finds_and_drops_a_damaged_shard(store):
    victim = damage_a_pair_shard(store)
    result = check_store(store)
    assert not result.ok and result.dropped == [] and victim.exists()
    assert any(line.startswith(f"{victim}: ") for line in result.damaged)
    dropped = check_store(store, drop=True)
    assert dropped.dropped == [str(victim)] and not victim.exists()
    assert check_store(store).ok
    info = store_info(store)
    assert (info.images, info.pairs) == (3, 1)  # the next run redoes the dropped pair
    assert not (store / ".lightmatch.lock").exists()


def test_drop_waits_for_no_one(store):
    damage_a_pair_shard(store)
    writer = OutputStore(store, ATTRS, MATCH_ATTRS).open()
    try:
        with pytest.raises(OutputError, match="another lightmatch run"):
            check_store(store, drop=True)
    finally:
        writer.close()


def test_compact_writes_plain_hloc_files(store, tmp_path):
    written = compact_store(store, tmp_path / "plain")
    assert written == [str(tmp_path / "plain" / "features.h5"), str(tmp_path / "plain" / "matches.h5")]
    with h5py.File(tmp_path / "plain" / "features.h5", "r") as handle:
        assert not shards.is_sharded(handle) and handle.attrs["lightmatch_extractor"] == "test"
        assert sorted(h5.feature_groups(handle)) == ["b.jpg", "c.jpg", "sub/a.jpg"]
        assert np.array_equal(handle["sub/a.jpg/keypoints"][()], features(0).keypoints.numpy())
    with h5py.File(tmp_path / "plain" / "matches.h5", "r") as handle:
        assert shards.LAYOUT_ATTR not in handle.attrs
        assert not any(isinstance(handle.get(k, getlink=True), h5py.ExternalLink) for k in handle)
        assert handle["sub-a.jpg/b.jpg/inliers"][()].tolist() == [True, False, True]
    pairs, _ = h5.read_matches(tmp_path / "plain" / "matches.h5", "c.jpg", "b.jpg")
    assert pairs.tolist() == [[1, 0], [0, 2]]  # found under either order
    assert not (store / ".lightmatch.lock").exists()


def test_compact_features_only_and_not_into_itself(tmp_path):
    h5.write_features(tmp_path / "src" / "features.h5", {"a.jpg": features(0)}, ATTRS)
    assert compact_store(tmp_path / "src", tmp_path / "dst") == [str(tmp_path / "dst" / "features.h5")]
    assert not (tmp_path / "dst" / "matches.h5").exists()
    with pytest.raises(InputError, match="compact into another folder"):
        compact_store(tmp_path / "src", tmp_path / "src" / ".")
