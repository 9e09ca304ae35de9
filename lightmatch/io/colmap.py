"""Export features and matches to a COLMAP database, ready for ``colmap mapper`` / ``pycolmap.incremental_mapping``.

The database is written with Python's ``sqlite3`` in the schema of COLMAP >= 3.12 (the one pycolmap 4.2 creates:
rigs, frames, cameras, images, keypoints, matches, two-view geometries), so pycolmap is not needed at run time.
Like COLMAP's own image reader, every camera gets a trivial rig and every image a frame of its own.

Conventions, as hloc's ``reconstruction.py`` / ``triangulation.py``:

* cameras: one per image (or one shared with ``single_camera``), size from ``image_size`` in ``features.h5``,
  focal length ``1.2 * max(W, H)`` marked as *not* a prior (``prior_focal_length = 0``, so the mapper refines it),
  principal point ``(W / 2, H / 2)`` in COLMAP's pixel convention, distortion 0;
* keypoints: shifted by +0.5, since COLMAP puts the centre of the top-left pixel at (0.5, 0.5);
* matches: every pair, raw; pairs whose ``matches.h5`` group has an ``inliers`` dataset also get a two-view
  geometry with the inlier matches (config CALIBRATED, no F/E/H/pose stored), which is what the mapper reads.
  Pairs without ``inliers`` must be verified by COLMAP first (``colmap matches_importer`` or
  ``pycolmap.verify_matches``) before mapping.

Image ids follow the sorted image names (1-based); pair ids are COLMAP's
``image_id1 * 2147483647 + image_id2`` with ``image_id1 < image_id2``, the matches swapped where needed.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import h5py
import numpy as np

from ..errors import ConfigError, InputError, OutputError
from .atomic import atomic_output
from .cameras import CAMERA_MODELS, camera_params
from .files import check_regular_file
from .h5 import INDEX_GROUP, feature_groups, find_pair, match_groups, names_to_pair
from .images import read_image
from .pairs import read_pairs

MAX_IMAGE_ID = 2147483647
SENSOR_CAMERA = 0  # COLMAP's SensorType::CAMERA
CONFIG_DEGENERATE = 1  # COLMAP's TwoViewGeometry::ConfigurationType
CONFIG_CALIBRATED = 2


# COLMAP's schema (src/colmap/scene/database_sqlite.cc); COLMAP opens and migrates it with CREATE ... IF NOT EXISTS.
SCHEMA = """
CREATE TABLE IF NOT EXISTS rigs (
    rig_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    ref_sensor_id INTEGER NOT NULL,
    ref_sensor_type INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS rig_ref_sensor_assignment ON rigs(ref_sensor_id, ref_sensor_type);
CREATE TABLE IF NOT EXISTS rig_sensors (
    rig_id INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL,
    sensor_type INTEGER NOT NULL,
    sensor_from_rig BLOB,
    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS rig_sensor_assignment ON rig_sensors(sensor_id, sensor_type);
CREATE TABLE IF NOT EXISTS cameras (
    camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    model INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    params BLOB,
    prior_focal_length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    frame_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    rig_id INTEGER NOT NULL,
    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS frame_data (
    frame_id INTEGER NOT NULL,
    data_id INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL,
    sensor_type INTEGER NOT NULL,
    FOREIGN KEY(frame_id) REFERENCES frames(frame_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS frame_sensor_assignment ON frame_data(data_id, sensor_type);
CREATE TABLE IF NOT EXISTS images (
    image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    camera_id INTEGER NOT NULL,
    CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),
    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX IF NOT EXISTS index_name ON images(name);
CREATE TABLE IF NOT EXISTS pose_priors (
    pose_prior_id INTEGER PRIMARY KEY NOT NULL,
    corr_data_id INTEGER NOT NULL,
    corr_sensor_id INTEGER NOT NULL,
    corr_sensor_type INTEGER NOT NULL,
    position BLOB,
    position_covariance BLOB,
    gravity BLOB,
    coordinate_system INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS pose_prior_data_assignment
    ON pose_priors(corr_data_id, corr_sensor_id, corr_sensor_type);
CREATE TABLE IF NOT EXISTS keypoints (
    image_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS descriptors (
    image_id INTEGER PRIMARY KEY NOT NULL,
    type INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS matches (
    pair_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB);
CREATE TABLE IF NOT EXISTS two_view_geometries (
    pair_id INTEGER PRIMARY KEY NOT NULL,
    rows INTEGER NOT NULL,
    cols INTEGER NOT NULL,
    data BLOB,
    config INTEGER NOT NULL,
    F BLOB,
    E BLOB,
    H BLOB,
    qvec BLOB,
    tvec BLOB,
    camera1 BLOB,
    camera2 BLOB);
"""


@dataclass
class ColmapExport:
    """What :func:`export_colmap` wrote."""

    database: str
    num_images: int
    num_cameras: int
    num_pairs: int
    num_verified_pairs: int
    num_matches: int
    num_inlier_matches: int


def pair_id(image_id1: int, image_id2: int) -> int:
    """COLMAP's pair id, order-independent (the smaller id first)."""
    if image_id1 > image_id2:
        image_id1, image_id2 = image_id2, image_id1
    return image_id1 * MAX_IMAGE_ID + image_id2


def _blob(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _open_h5(path: Path, what: str) -> h5py.File:
    check_regular_file(path, f"{what} file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _stored_pairs(handle: h5py.File, names: list[str], path: Path) -> list[tuple[str, str]]:
    """Pairs present in a matches store, mapped back to image names (keys have ``/`` replaced by ``-``)."""
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(name.replace("/", "-"), name)
    pairs = []
    if INDEX_GROUP in handle:  # a sharded store's top file: its index names the pairs
        for key in match_groups(handle):
            key0, key1 = key.split("/")
            if key0 not in by_key or key1 not in by_key:
                raise InputError(f"{path}: pair '{key}' names images without features")
            pairs.append((by_key[key0], by_key[key1]))
        return pairs
    for key0, group in handle.items():
        if not isinstance(group, h5py.Group):
            continue
        if "matches0" in group:  # hloc's legacy 'name0_name1' keys
            for i, c in enumerate(key0):
                if c == "_" and key0[:i] in by_key and key0[i + 1:] in by_key:
                    pairs.append((by_key[key0[:i]], by_key[key0[i + 1:]]))
                    break
            else:
                raise InputError(f"{path}: pair '{key0}' names images without features")
            continue
        for key1, sub in group.items():
            if isinstance(sub, h5py.Group) and "matches0" in sub:
                if key0 not in by_key or key1 not in by_key:
                    raise InputError(f"{path}: pair '{key0}/{key1}' names images without features")
                pairs.append((by_key[key0], by_key[key1]))
    return pairs


def _image_size(group: h5py.Group, image_dir: Path, name: str) -> tuple[int, int]:
    size = group["image_size"][()] if "image_size" in group else (0, 0)
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:  # older stores without a size: read the image itself
        height, width = read_image(image_dir / name).shape[:2]
    return width, height


def unfinished_inputs(*store_files: str | os.PathLike) -> Optional[str]:
    """A warning for an export of ``store_files`` when one of them lacks results of an interrupted run (held in its
    part folder until that run is rerun); else None."""
    from .store import unfinished_parts

    for path in store_files:
        parts = unfinished_parts(path)
        if parts is not None:
            return (f"{parts} holds results of an interrupted run that are not in {path} yet; rerun that command "
                    "to finish it")
    return None


def export_colmap(
    image_dir: str | os.PathLike,
    features_h5: str | os.PathLike,
    matches_h5: str | os.PathLike,
    database_path: str | os.PathLike,
    pairs: Optional[Union[Iterable[tuple[str, str]], str, os.PathLike]] = None,
    camera_model: str = "SIMPLE_RADIAL",
    single_camera: bool = False,
) -> ColmapExport:
    """Write a COLMAP database from a features store and a matches store (hloc layout).

    Args:
        image_dir: root of the images; every image of ``features_h5`` must be there (COLMAP reads them later).
        features_h5: ``features.h5``; all its images are imported, with ids in sorted name order.
        matches_h5: ``matches.h5``; pairs with an ``inliers`` dataset also get a verified two-view geometry.
        database_path: output ``.db``; an existing file is replaced (atomically, once the new one is complete).
        pairs: the pairs to import (a list of name pairs or a pairs file, ``'-'`` for stdin); by default every
            pair stored in ``matches_h5``. Self-pairs and repeats (in either order) are imported once.
        camera_model: a COLMAP camera model name, initialised as COLMAP does (see :func:`camera_params`).
        single_camera: one camera shared by all images (they must all have the same size).

    Returns:
        :class:`ColmapExport` with the numbers of images, cameras, pairs, verified pairs, matches and inliers.
    """
    image_dir, features_h5, matches_h5 = Path(image_dir), Path(features_h5), Path(matches_h5)
    database_path = Path(database_path)
    if camera_model not in CAMERA_MODELS:
        raise ConfigError(f"unknown COLMAP camera model {camera_model!r}; choose one of {', '.join(CAMERA_MODELS)}")
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    if pairs is not None and isinstance(pairs, (str, os.PathLike)):
        pairs = read_pairs(pairs)

    with _open_h5(features_h5, "features") as fh, _open_h5(matches_h5, "matches") as mh:
        names = feature_groups(fh)
        if not names:
            raise InputError(f"{features_h5}: no image features in this file")
        for name in names:
            if not (image_dir / name).is_file():
                raise InputError(f"{image_dir / name}: image of {features_h5} not found in the image directory")
        image_ids = {name: i for i, name in enumerate(names, 1)}
        sizes = {name: _image_size(fh[name], image_dir, name) for name in names}
        if single_camera and len(set(sizes.values())) > 1:
            raise InputError(f"{features_h5}: single_camera needs images of one size, found "
                             f"{len(set(sizes.values()))} sizes")

        if pairs is None:
            pairs = _stored_pairs(mh, names, matches_h5)
        unique: dict[int, tuple[str, str]] = {}
        for name0, name1 in pairs:
            for name in (name0, name1):
                if name not in image_ids:
                    raise InputError(f"{features_h5}: no features for image '{name}' of pair ({name0}, {name1})")
            if name0 != name1:
                unique.setdefault(pair_id(image_ids[name0], image_ids[name1]), (name0, name1))

        try:
            with atomic_output(database_path, "the database") as tmp:
                db = sqlite3.connect(tmp)
                try:
                    db.executescript(SCHEMA)
                    summary = _write(db, fh, mh, matches_h5, names, image_ids, sizes, unique, camera_model,
                                     single_camera)
                    db.commit()
                finally:
                    db.close()
        except sqlite3.Error as exc:
            raise OutputError(f"{database_path}: cannot write the COLMAP database ({exc})") from exc
    return ColmapExport(str(database_path), *summary)


def _write(db: sqlite3.Connection, fh: h5py.File, mh: h5py.File, matches_h5: Path, names: list[str],
           image_ids: dict[str, int], sizes: dict[str, tuple[int, int]], pairs: dict[int, tuple[str, str]],
           camera_model: str, single_camera: bool) -> tuple[int, int, int, int, int, int]:
    model_id = CAMERA_MODELS[camera_model][0]
    camera_ids: dict[str, int] = {}
    num_cameras = 0
    for name in names:
        if single_camera and camera_ids:
            camera_ids[name] = 1
            continue
        num_cameras += 1
        camera_id = num_cameras
        width, height = sizes[name]
        db.execute("INSERT INTO cameras VALUES (?, ?, ?, ?, ?, ?)",
                   (camera_id, model_id, width, height, _blob(camera_params(camera_model, width, height),
                                                              np.float64), 0))
        # a trivial rig per camera, as COLMAP's image reader creates (rig id = camera id)
        db.execute("INSERT INTO rigs VALUES (?, ?, ?)", (camera_id, camera_id, SENSOR_CAMERA))
        camera_ids[name] = camera_id

    num_keypoints = {}
    for name in names:
        image_id = image_ids[name]
        db.execute("INSERT INTO images VALUES (?, ?, ?)", (image_id, name, camera_ids[name]))
        db.execute("INSERT INTO frames VALUES (?, ?)", (image_id, camera_ids[name]))
        db.execute("INSERT INTO frame_data VALUES (?, ?, ?, ?)", (image_id, image_id, camera_ids[name],
                                                                   SENSOR_CAMERA))
        keypoints = np.asarray(fh[name]["keypoints"][()], dtype=np.float32).reshape(-1, 2) + 0.5
        num_keypoints[image_id] = len(keypoints)
        db.execute("INSERT INTO keypoints VALUES (?, ?, ?, ?)", (image_id, len(keypoints), 2,
                                                                 _blob(keypoints, np.float32)))

    num_verified = num_matches = num_inliers = 0
    for pid, (name0, name1) in sorted(pairs.items()):
        try:
            key, reverse = find_pair(mh, name0, name1)
        except KeyError:
            raise InputError(f"{matches_h5}: no matches for pair ({name0}, {name1}) "
                             f"(expected group '{names_to_pair(name0, name1)}')") from None
        group = mh[key]
        matches0 = np.asarray(group["matches0"][()], dtype=np.int64).reshape(-1)
        first, second = (name1, name0) if reverse else (name0, name1)  # the order the pair is stored in
        id_first, id_second = image_ids[first], image_ids[second]
        valid = matches0 > -1
        if len(matches0) != num_keypoints[id_first] or (valid.any() and matches0.max() >= num_keypoints[id_second]):
            raise InputError(f"{matches_h5}: matches of pair '{key}' do not fit the keypoints in the features file")
        idx = np.nonzero(valid)[0]
        matches = np.stack([idx, matches0[idx]], -1)
        inliers = None
        if "inliers" in group:
            mask = np.asarray(group["inliers"][()], dtype=bool).reshape(-1)
            if len(mask) != len(matches0):
                raise InputError(f"{matches_h5}: 'inliers' of pair '{key}' has {len(mask)} entries, "
                                 f"expected {len(matches0)}")
            inliers = matches[mask[idx]]
        if id_first > id_second:  # COLMAP stores pairs with the smaller image id first
            matches = matches[:, ::-1]
            inliers = None if inliers is None else inliers[:, ::-1]
        db.execute("INSERT INTO matches VALUES (?, ?, ?, ?)", (pid, len(matches), 2, _blob(matches, np.uint32)))
        num_matches += len(matches)
        if inliers is not None:
            config = CONFIG_CALIBRATED if len(inliers) else CONFIG_DEGENERATE
            db.execute("INSERT INTO two_view_geometries (pair_id, rows, cols, data, config) VALUES (?, ?, ?, ?, ?)",
                       (pid, len(inliers), 2, _blob(inliers, np.uint32), config))
            num_verified += 1
            num_inliers += len(inliers)
    return len(names), num_cameras, len(pairs), num_verified, num_matches, num_inliers
