"""HDF5 stores: hloc's layout and conventions, atomic writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from lightmatch.errors import InputError, OutputError
from lightmatch.io import h5
from lightmatch.types import Features, Matches


def make_features(n: int, dim: int = 8, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    return Features.from_numpy(rng.random((n, 2)) * 100, rng.random(n), rng.random((n, dim)), (640, 480))


def test_hloc_names_to_pair():
    assert h5.names_to_pair("a/b.jpg", "c.jpg") == "a-b.jpg/c.jpg"
    assert h5.names_to_pair("a.jpg", "b.jpg", separator="_") == "a.jpg_b.jpg"


def test_features_layout_as_hloc_reads_it(tmp_path):
    feats = make_features(5)
    path = tmp_path / "features.h5"
    h5.write_features(path, {"seq/img0.jpg": feats}, {"lightmatch_extractor": "aliked-n16"})
    with h5py.File(path, "r") as f:
        grp = f["seq"]["img0.jpg"]  # nested groups, as hloc's names with '/'
        assert grp["keypoints"].shape == (5, 2) and grp["keypoints"].dtype == np.float32
        assert grp["descriptors"].shape == (8, 5)  # (D, N)
        assert grp["scores"].shape == (5,)
        assert grp["image_size"][()].tolist() == [640, 480]
        assert f.attrs["lightmatch_extractor"] == "aliked-n16"
    back = h5.read_features(path, "seq/img0.jpg")
    assert torch.equal(back.keypoints, feats.keypoints) and torch.equal(back.descriptors, feats.descriptors)
    assert h5.stored_image_names(path) == ["seq/img0.jpg"]


def test_matches_layout_and_find_pair_in_either_order(tmp_path):
    m0 = torch.tensor([2, -1, 0, 40000])  # indices past int16 range survive
    matches = Matches(m0, torch.tensor([0.9, 0.0, 0.5, 0.7]))
    path = tmp_path / "matches.h5"
    h5.write_matches(path, {("a/x.jpg", "y.jpg"): matches})
    with h5py.File(path, "r") as f:
        grp = f["a-x.jpg"]["y.jpg"]
        assert grp["matches0"][()].tolist() == [2, -1, 0, 40000]  # index into image 1, or -1
        assert grp["matching_scores0"].shape == (4,)
    pairs, scores = h5.read_matches(path, "a/x.jpg", "y.jpg")
    assert pairs.tolist() == [[0, 2], [2, 0], [3, 40000]] and scores.tolist() == pytest.approx([0.9, 0.5, 0.7])
    reverse, _ = h5.read_matches(path, "y.jpg", "a/x.jpg")
    assert reverse.tolist() == [[2, 0], [0, 2], [40000, 3]]
    with pytest.raises(InputError, match="no matches for pair"):
        h5.read_matches(path, "y.jpg", "z.jpg")


def test_empty_features_and_matches_round_trip(tmp_path):
    empty = Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 128), (100, 80))
    h5.write_features(tmp_path / "f.h5", {"blank.png": empty})
    back = h5.read_features(tmp_path / "f.h5", "blank.png")
    assert len(back) == 0 and back.descriptors.shape == (0, 128)
    h5.write_matches(tmp_path / "m.h5", {("blank.png", "x.png"): Matches(torch.zeros(0, dtype=torch.long),
                                                                          torch.zeros(0))})
    pairs, scores = h5.read_matches(tmp_path / "m.h5", "blank.png", "x.png")
    assert pairs.shape == (0, 2) and scores.shape == (0,)


def test_failed_write_leaves_the_old_store_intact(tmp_path):
    path = tmp_path / "features.h5"
    h5.write_features(path, {"a.jpg": make_features(3)})
    before = path.read_bytes()
    with pytest.raises(OutputError, match="features.h5: cannot write output \\(killed mid-write\\)"):
        with h5.atomic_h5(path) as handle:
            handle.create_group("half-written")
            raise RuntimeError("killed mid-write")  # as h5py raises a failed write: one line naming the file
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["features.h5"]  # no temporary left behind


def test_adding_to_an_existing_store_keeps_old_groups(tmp_path):
    path = tmp_path / "features.h5"
    h5.write_features(path, {"a.jpg": make_features(3)})
    h5.write_features(path, {"b.jpg": make_features(4, seed=1)})
    assert sorted(h5.stored_image_names(path)) == ["a.jpg", "b.jpg"]


def test_unreadable_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "features.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="features.h5: not a readable HDF5 file"):
        h5.read_features(bad, "a.jpg")
