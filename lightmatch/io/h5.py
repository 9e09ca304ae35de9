"""HDF5 feature and match stores in hloc's layout.

``features.h5``: one group per image name (path relative to the image root; ``/`` nests groups as in hloc) holding
``keypoints`` (N, 2) float32, ``scores`` (N,) float32, ``descriptors`` (D, N) float32 and ``image_size`` (2,) = (W, H).
``matches.h5``: one group per pair, ``names_to_pair(name0, name1)``, holding ``matches0`` (N0,) int32 (index into
image 1 or -1) and ``matching_scores0`` (N0,) float32; optional ``inliers`` (N0,) bool after verification.
File attributes record the model and settings that produced the file.

Writes are atomic: the new content goes to a temporary file in the same folder that replaces the old one only once
complete and closed, so a failed or killed run never leaves a truncated store. That copies the whole store per
write; batches instead write small part files and consolidate them (:class:`lightmatch.io.store.OutputStore`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping, Optional

import h5py
import numpy as np
import torch

from ..errors import InputError
from ..types import Features, Matches
from .atomic import atomic_output
from .files import check_regular_file

INDEX_GROUP = "__lightmatch_index__"
"""Group of a sharded store's top file holding its index (:mod:`lightmatch.io.shards`)."""


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: ``name0`` and ``name1`` with ``/`` replaced by ``-``, joined by ``separator``."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a writable copy of ``path`` (or a new file) that replaces ``path`` atomically when the block succeeds."""
    path = Path(path)
    with atomic_output(path, "output") as tmp_path:
        if path.exists():
            shutil.copyfile(path, tmp_path)
            mode = "r+"
        else:
            mode = "w"
        try:
            handle = h5py.File(tmp_path, mode)
        except OSError as exc:
            raise InputError(f"{path}: existing file is not a readable HDF5 store ({exc})") from exc
        with handle:
            yield handle


def set_attrs(handle: h5py.File, attrs: Optional[Mapping]) -> None:
    for key, value in (attrs or {}).items():
        handle.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


def _replace_group(handle: h5py.File, key: str) -> h5py.Group:
    if key in handle:
        del handle[key]
    return handle.create_group(key)


def _np(t: torch.Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=dtype)


def put_features(handle: h5py.File, name: str, feats: Features) -> None:
    """Write one image's features into an open store (replacing any old group)."""
    grp = _replace_group(handle, name)
    grp.create_dataset("keypoints", data=_np(feats.keypoints, np.float32).reshape(-1, 2))
    grp.create_dataset("scores", data=_np(feats.scores, np.float32).reshape(-1))
    desc = _np(feats.descriptors, np.float32)
    dim = desc.shape[-1] if desc.ndim == 2 else (desc.size // max(len(feats), 1))
    grp.create_dataset("descriptors", data=desc.reshape(len(feats), dim).T)  # (D, N), also for N = 0
    grp.create_dataset("image_size", data=np.asarray(feats.image_size, dtype=np.int64))
    if feats.scales is not None:
        grp.create_dataset("scales", data=_np(feats.scales, np.float32))
    if feats.oris is not None:
        grp.create_dataset("oris", data=_np(feats.oris, np.float32))


def put_matches(handle: h5py.File, name0: str, name1: str, matches: Matches,
                inliers: Optional[np.ndarray] = None) -> None:
    """Write one pair's matches into an open store (replacing any old group)."""
    grp = _replace_group(handle, names_to_pair(name0, name1))
    grp.create_dataset("matches0", data=_np(matches.matches0, np.int32))
    grp.create_dataset("matching_scores0", data=_np(matches.scores0, np.float32))
    if inliers is not None:
        grp.create_dataset("inliers", data=np.asarray(inliers, dtype=bool))


def write_features(path: str | os.PathLike, items: Mapping[str, Features], attrs: Optional[Mapping] = None) -> None:
    """Add or replace the features of ``items`` (image name -> Features) in ``path``, atomically."""
    with atomic_h5(path) as handle:
        set_attrs(handle, attrs)
        for name, feats in items.items():
            put_features(handle, name, feats)


def write_matches(path: str | os.PathLike, items: Mapping[tuple[str, str], Matches],
                  attrs: Optional[Mapping] = None) -> None:
    """Add or replace the matches of ``items`` ((name0, name1) -> Matches) in ``path``, atomically."""
    with atomic_h5(path) as handle:
        set_attrs(handle, attrs)
        for (name0, name1), matches in items.items():
            put_matches(handle, name0, name1, matches)


def _open_read(path: str | os.PathLike) -> h5py.File:
    path = check_regular_file(path, "HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc


def stored_image_names(path: str | os.PathLike) -> list[str]:
    """Names of all images with features in ``path``."""
    with _open_read(path) as handle:
        return feature_groups(handle)


def get_features(grp: h5py.Group) -> Features:
    """The features stored in an open image group (descriptors back to ``(N, D)``)."""
    extra = {k: grp[k][()] for k in ("scales", "oris") if k in grp}
    size = grp["image_size"][()] if "image_size" in grp else (0, 0)
    return Features.from_numpy(grp["keypoints"][()], grp["scores"][()], grp["descriptors"][()].T,
                               (int(size[0]), int(size[1])), **extra)


def canonical_features(feats: Features) -> Features:
    """``feats`` on the CPU exactly as :func:`put_features` then :func:`get_features` would give them back.

    Matching these gives the same result as matching features read back from a store.
    """
    def arr(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
        return None if t is None else _np(t, np.float32).reshape(-1)

    n = len(feats)
    desc = _np(feats.descriptors, np.float32)
    dim = desc.shape[-1] if desc.ndim == 2 else (desc.size // max(n, 1))
    return Features.from_numpy(_np(feats.keypoints, np.float32).reshape(-1, 2), arr(feats.scores),
                               desc.reshape(n, dim), feats.image_size, arr(feats.scales), arr(feats.oris))


def feature_groups(handle: h5py.Group) -> list[str]:
    """Names (paths below ``handle``) of all image groups with features in an open store, sorted. A sharded
    store's top file answers from its index (one read), since walking does not follow its external links."""
    if INDEX_GROUP in handle:
        return sorted(set(_texts(handle[INDEX_GROUP]["names"][()])))
    names: list[str] = []
    handle.visititems(lambda key, obj: names.append(key) if isinstance(obj, h5py.Group)
                      and "keypoints" in obj else None)
    return sorted(names)


def match_groups(handle: h5py.Group) -> list[str]:
    """Keys (paths below ``handle``, e.g. ``'a.jpg/b.jpg'``) of all pair groups in an open matches store, sorted
    (a sharded store's from its index)."""
    if INDEX_GROUP in handle:
        names, pairs = indexed_pairs(handle)
        return sorted({f"{names[a]}/{names[b]}" for a, b in pairs[:, :2].tolist()})
    keys: list[str] = []
    handle.visititems(lambda key, obj: keys.append(key) if isinstance(obj, h5py.Group)
                      and "matches0" in obj else None)
    return sorted(keys)


def _texts(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def indexed_pairs(handle: h5py.File) -> tuple[list[str], np.ndarray]:
    """A sharded matches top file's index: image names (pair-key spelling) and ``(P, 3)`` rows of
    (name id 0, name id 1, shard id); a pair stored again has a later row."""
    group = handle[INDEX_GROUP]
    return _texts(group["names"][()]), group["pairs"][()]


def read_features(path: str | os.PathLike, name: str) -> Features:
    """Read one image's features (descriptors back to ``(N, D)``)."""
    with _open_read(path) as handle:
        if name not in handle or "keypoints" not in handle[name]:
            raise InputError(f"{path}: no features for image '{name}'")
        return get_features(handle[name])


def find_pair(handle: h5py.File, name0: str, name1: str) -> tuple[str, bool]:
    """Key of the pair in an open matches store and whether it is stored in reverse order (as hloc's find_pair)."""
    for separator in ("/", "_"):  # hloc's current and legacy separators
        if names_to_pair(name0, name1, separator) in handle:
            return names_to_pair(name0, name1, separator), False
        if names_to_pair(name1, name0, separator) in handle:
            return names_to_pair(name1, name0, separator), True
    raise KeyError(f"no pair ({name0}, {name1})")


def read_matches(path: str | os.PathLike, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """``(M, 2)`` matched index pairs and ``(M,)`` scores of a pair, whichever order it was stored in."""
    with _open_read(path) as handle:
        try:
            key, reverse = find_pair(handle, name0, name1)
        except KeyError:
            raise InputError(f"{path}: no matches for pair ({name0}, {name1})") from None
        m0 = handle[key]["matches0"][()].astype(np.int64)
        s0 = handle[key]["matching_scores0"][()].astype(np.float32)
    idx = np.nonzero(m0 > -1)[0]
    pairs = np.stack([idx, m0[idx]], -1)
    scores = s0[idx]
    if reverse:
        pairs = pairs[:, ::-1].copy()
    return pairs, scores
