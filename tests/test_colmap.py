"""COLMAP export: a synthetic 3D scene seen by five cameras, exported, read back and reconstructed by pycolmap."""

from __future__ import annotations

import itertools
import sqlite3

import cv2
import h5py
import numpy as np
import pytest
import torch

from lightmatch.errors import ConfigError, InputError
from lightmatch.io.colmap import export_colmap, pair_id
from lightmatch.io.h5 import atomic_h5, put_matches, write_features
from lightmatch.io.pairs import write_pairs
from lightmatch.pipeline.verify import verify_pair
from lightmatch.types import Features, Matches

pycolmap = pytest.importorskip("pycolmap")

W, H = 640, 480
F = 1.2 * max(W, H)  # the focal prior the export writes: the truth here, so the mapper starts at the right place
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])  # lightmatch pixel convention
NAMES = [f"seq/img{i}.png" for i in range(5)]
# pairs stored in matches.h5 in both orders, so the export has to swap some of them
STORED = [(a, b) if (i + j) % 2 else (b, a) for (i, a), (j, b) in itertools.combinations(enumerate(NAMES), 2)]


def look_at(center):
    z = -center / np.linalg.norm(center)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return R, -R @ center


def make_scene(tmp_path, seed=0, n_points=500, outlier_ratio=0.15, verify=True):
    """Write images, features.h5 and matches.h5 of a synthetic scene; return paths and the keypoints' track ids."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.5, 1.5, (n_points, 3))
    images, tracks, feats = tmp_path / "images", {}, {}
    for i, name in enumerate(NAMES):
        angle = np.deg2rad(-30 + 15 * i)
        R, t = look_at(np.array([6 * np.sin(angle), 0.4 * (i % 2), -6 * np.cos(angle)]))
        p = (X @ R.T + t) @ K.T
        kp = p[:, :2] / p[:, 2:] + rng.normal(0, 0.3, (n_points, 2))
        visible = np.nonzero((kp[:, 0] > 0) & (kp[:, 0] < W - 1) & (kp[:, 1] > 0) & (kp[:, 1] < H - 1))[0]
        order = rng.permutation(len(visible) + 40)  # plus 40 keypoints of no 3D point, shuffled
        track = np.r_[visible, -np.ones(40, dtype=int)][order]
        kp = np.r_[kp[visible], rng.uniform([0, 0], [W - 1, H - 1], (40, 2))][order]
        tracks[name] = track
        feats[name] = Features.from_numpy(kp, rng.random(len(kp)), rng.random((len(kp), 8)), (W, H))
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / name), np.zeros((H, W), np.uint8))
    write_features(tmp_path / "features.h5", feats)
    with atomic_h5(tmp_path / "matches.h5") as handle:
        for name0, name1 in STORED:
            where1 = {int(tid): k for k, tid in enumerate(tracks[name1]) if tid >= 0}
            matches0 = np.array([where1.get(int(tid), -1) if tid >= 0 else -1 for tid in tracks[name0]])
            wrong = (matches0 > -1) & (rng.random(len(matches0)) < outlier_ratio)
            matches0[wrong] = rng.integers(0, len(tracks[name1]), wrong.sum())
            _, first = np.unique(matches0, return_index=True)  # one-to-one, as matchers give
            keep = np.zeros(len(matches0), bool)
            keep[first] = True
            matches0[~keep] = -1
            m = Matches(torch.from_numpy(matches0), torch.ones(len(matches0)))
            inliers = verify_pair(feats[name0], feats[name1], m, model="fundamental", threshold=1.0) if verify \
                else None
            put_matches(handle, name0, name1, m, inliers=inliers)
    return images, tmp_path / "features.h5", tmp_path / "matches.h5", tracks, feats


def correct(tracks, name0, name1, matches):
    t0, t1 = tracks[name0][matches[:, 0]], tracks[name1][matches[:, 1]]
    return (t0 >= 0) & (t0 == t1)


def test_export_read_back_and_map(tmp_path):
    images, features, matches, tracks, feats = make_scene(tmp_path)
    db_path = tmp_path / "out" / "database.db"
    summary = export_colmap(images, features, matches, db_path)
    assert (summary.num_images, summary.num_cameras, summary.num_pairs, summary.num_verified_pairs) == (5, 5, 10, 10)
    assert 0 < summary.num_inlier_matches < summary.num_matches
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["database.db"]  # no temporaries left

    db = pycolmap.Database.open(db_path)
    try:
        by_name = {image.name: image for image in db.read_all_images()}
        assert sorted(by_name) == NAMES
        assert db.num_cameras() == 5 and len(db.read_all_frames()) == 5 and len(db.read_all_rigs()) == 5
        for name in NAMES:
            image = by_name[name]
            camera = db.read_camera(image.camera_id)
            assert camera.model.name == "SIMPLE_RADIAL" and (camera.width, camera.height) == (W, H)
            np.testing.assert_allclose(camera.params, [F, W / 2, H / 2, 0.0])
            assert not camera.has_prior_focal_length
            # COLMAP's pixel centre is at (0.5, 0.5): keypoints shifted by +0.5
            np.testing.assert_allclose(db.read_keypoints(image.image_id)[:, :2], feats[name].keypoints.numpy() + 0.5,
                                       atol=1e-5)
        for name0, name1 in itertools.combinations(NAMES, 2):
            id0, id1 = by_name[name0].image_id, by_name[name1].image_id
            raw = db.read_matches(id0, id1).astype(np.int64)  # oriented (name0, name1) whichever way stored
            assert raw.shape[1] == 2 and correct(tracks, name0, name1, raw).mean() > 0.7
            geometry = db.read_two_view_geometry(id0, id1)
            assert geometry.config == pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            inl = geometry.inlier_matches.astype(np.int64)
            assert len(inl) > 50 and correct(tracks, name0, name1, inl).mean() > 0.97
            assert len({tuple(r) for r in inl} - {tuple(r) for r in raw}) == 0  # inliers are a subset
    finally:
        db.close()

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 2
    options.min_model_size = 3
    recs = pycolmap.incremental_mapping(db_path, images, tmp_path / "sfm", options=options)
    assert len(recs) == 1
    rec = recs[0]
    assert rec.num_reg_images() == 5
    assert rec.num_points3D() > 200
    assert rec.compute_mean_reprojection_error() < 1.0
    for camera in rec.cameras.values():
        assert abs(camera.params[0] - F) / F < 0.05


def test_single_camera_pairs_subset_and_replace(tmp_path):
    images, features, matches, tracks, _ = make_scene(tmp_path, verify=False)
    db_path = tmp_path / "db.db"
    db_path.write_bytes(b"an old file that gets replaced")
    pairs_file = tmp_path / "pairs.txt"
    # a subset, one pair given in the other order than stored, a repeat and a self-pair
    write_pairs(pairs_file, [(NAMES[1], NAMES[0]), (NAMES[0], NAMES[1]), (NAMES[2], NAMES[3]), (NAMES[4], NAMES[4])])
    summary = export_colmap(images, features, matches, db_path, pairs=pairs_file, camera_model="PINHOLE",
                            single_camera=True)
    assert (summary.num_images, summary.num_cameras, summary.num_pairs, summary.num_verified_pairs) == (5, 1, 2, 0)
    db = pycolmap.Database.open(db_path)
    try:
        assert db.num_cameras() == 1 and db.num_images() == 5 and len(db.read_all_frames()) == 5
        camera = db.read_all_cameras()[0]
        assert camera.model.name == "PINHOLE"
        np.testing.assert_allclose(camera.params, [F, F, W / 2, H / 2])
        assert db.num_matched_image_pairs() == 2 and db.num_verified_image_pairs() == 0
        ids = {image.name: image.image_id for image in db.read_all_images()}
        m = db.read_matches(ids[NAMES[0]], ids[NAMES[1]]).astype(np.int64)
        assert correct(tracks, NAMES[0], NAMES[1], m).mean() > 0.7
    finally:
        db.close()
    # raw sqlite view: COLMAP's pair id convention
    with sqlite3.connect(db_path) as con:
        got = sorted(row[0] for row in con.execute("SELECT pair_id FROM matches"))
    assert got == sorted([pair_id(1, 2), pair_id(3, 4)]) == [1 * 2147483647 + 2, 3 * 2147483647 + 4]


def test_errors(tmp_path):
    images, features, matches, _, _ = make_scene(tmp_path, n_points=150)
    db_path = tmp_path / "db.db"
    with pytest.raises(ConfigError, match="camera model"):
        export_colmap(images, features, matches, db_path, camera_model="PINHOLEX")
    with pytest.raises(InputError, match="no features for image 'seq/other.png'"):
        export_colmap(images, features, matches, db_path, pairs=[(NAMES[0], NAMES[1]), (NAMES[0], "seq/other.png")])
    with pytest.raises(InputError, match="no matches for pair"):
        with h5py.File(tmp_path / "empty.h5", "w"):
            pass
        export_colmap(images, features, tmp_path / "empty.h5", db_path, pairs=[(NAMES[0], NAMES[1])])
    with pytest.raises(InputError, match="no such matches file"):
        export_colmap(images, features, tmp_path / "missing.h5", db_path)
    with pytest.raises(InputError, match="no such image directory"):
        export_colmap(tmp_path / "nowhere", features, matches, db_path)
    (images / NAMES[2]).unlink()
    with pytest.raises(InputError, match="img2.png"):
        export_colmap(images, features, matches, db_path)
    assert not db_path.exists() and not list(tmp_path.glob(".db.db.*"))


def test_export_warns_of_unconsolidated_parts(tmp_path):
    """`export colmap` on a store whose run was interrupted warns that `.parts` holds results not exported."""
    from click.testing import CliRunner

    from lightmatch.cli import main
    from lightmatch.io.store import unfinished_parts

    images, features, matches, _, _ = make_scene(tmp_path, n_points=100)
    args = ["export", "colmap", "--image-dir", str(images), "--features", str(features), "--matches", str(matches),
            "--database", str(tmp_path / "db.db")]
    assert unfinished_parts(features) is None
    (tmp_path / ".parts").mkdir()
    (tmp_path / ".parts" / "notes.txt").write_text("not a part")
    assert unfinished_parts(matches) is None
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "interrupted run" not in result.stderr, result.stderr
    (tmp_path / ".parts" / "w0-00001-m.h5").write_bytes(b"")
    assert unfinished_parts(matches) == tmp_path / ".parts"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and f"{tmp_path / '.parts'} holds results of an interrupted run" in result.stderr
