"""What ``lightmatch store`` does to an output folder: describe it, verify it (optionally dropping damaged shards so
the next run redoes their work), and compact it into plain single-file hloc stores."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..errors import InputError
from . import h5, shards
from .atomic import WRITE_ERRORS, atomic_output, write_error
from .lock import FolderLock
from .store import FEATURES_FILE, MATCH_DEFAULTS, MATCHES_FILE, PARTS_DIR

STORE_ERRORS = (OSError, KeyError, RuntimeError, ValueError)
"""What reading a damaged HDF5 file or a dangling external link raises through h5py."""


@dataclass
class StoreInfo:
    folder: str
    layout: str  # "sharded", "single-file" or "empty"
    images: int
    pairs: int
    shards: int
    parts: int  # part files of an unfinished run, not in the stores yet
    size_bytes: int
    settings: dict = field(default_factory=dict)  # features/matches -> lightmatch_* attributes


@dataclass
class CheckResult:
    folder: str
    shards_checked: int
    items_checked: int
    damaged: list[str] = field(default_factory=list)  # "path: reason"
    dropped: list[str] = field(default_factory=list)  # shard files removed

    @property
    def ok(self) -> bool:
        return not self.damaged


def _folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not an output folder")
    if not (folder / FEATURES_FILE).exists() and not (folder / shards.SHARDS_DIR).is_dir():
        raise InputError(f"{folder}: holds no features.h5 (not a lightmatch output folder)")
    return folder


def _attr_text(value) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def store_info(folder: str | os.PathLike) -> StoreInfo:
    """Images, pairs, shards, size on disk and settings of an output folder (read only; no lock)."""
    folder = _folder(folder)
    counts, settings, layout = {"features": 0, "matches": 0}, {}, "empty"
    for kind in shards.KINDS:
        path = folder / f"{kind}.h5"
        if not path.exists():
            continue
        try:
            with h5py.File(path, "r") as handle:
                sharded = shards.is_sharded(handle)
                layout = "sharded" if sharded else "single-file"
                counts[kind] = len(h5.feature_groups(handle) if kind == "features" else h5.match_groups(handle))
                settings[kind] = {k: _attr_text(v) for k, v in handle.attrs.items()
                                  if k.startswith("lightmatch_") and k != shards.LAYOUT_ATTR}
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({exc}); run 'lightmatch store check'") from exc
    files = [p for p in folder.rglob("*") if p.is_file()]
    parts = folder / PARTS_DIR
    return StoreInfo(str(folder), layout, counts["features"], counts["matches"], len(shards.shard_names(folder)),
                     len(list(parts.glob("*.h5"))) if parts.is_dir() else 0, sum(p.stat().st_size for p in files),
                     settings)


def _check_shard(path: Path) -> Optional[str]:
    """Read every dataset of a shard; the reason it is damaged, or None."""
    problems: list[str] = []

    def visit(key: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and not problems:
            try:
                obj[()]
            except STORE_ERRORS as exc:
                problems.append(f"{key}: {' '.join(str(exc).split())[:160]}")
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except STORE_ERRORS as exc:
        return " ".join(str(exc).split())[:200]
    return problems[0] if problems else None


def check_store(folder: str | os.PathLike, drop: bool = False) -> CheckResult:
    """Read every shard's datasets and follow every link of the top files. With ``drop``, damaged shards are
    removed and both top files rebuilt from the rest (taking the folder's lock): the next run redoes the images and
    pairs they held (and the pairs of images whose features went with them)."""
    folder = _folder(folder)
    result = CheckResult(str(folder), 0, 0)
    bad: list[Path] = []
    for name in shards.shard_names(folder):
        result.shards_checked += 1
        reason = _check_shard(folder / name)
        if reason is not None:
            bad.append(folder / name)
            result.damaged.append(f"{folder / name}: {reason}")
    for kind, needed in (("features", "keypoints"), ("matches", "matches0")):
        path = folder / f"{kind}.h5"
        if not path.exists():
            continue
        try:
            with h5py.File(path, "r") as handle:
                keys = h5.feature_groups(handle) if kind == "features" else h5.match_groups(handle)
                for key in keys:
                    result.items_checked += 1
                    try:
                        handle[key][needed].shape
                    except STORE_ERRORS as exc:
                        result.damaged.append(f"{path}: {key}: {' '.join(str(exc).split())[:160]}")
        except OSError as exc:
            result.damaged.append(f"{path}: {' '.join(str(exc).split())[:200]}")
    if drop and result.damaged:
        lock = FolderLock(folder, 0.0)
        lock.acquire()
        try:
            for path in bad:
                path.unlink()
                result.dropped.append(str(path))
            for kind, defaults in (("features", None), ("matches", MATCH_DEFAULTS)):
                try:
                    shards.update_top(folder, kind, defaults, rebuild=True)
                except WRITE_ERRORS as exc:
                    raise write_error(folder / f"{kind}.h5", "the store", exc) from exc
        finally:
            lock.release()
    return result


def compact_store(folder: str | os.PathLike, output: str | os.PathLike) -> list[str]:
    """Write ``output/features.h5`` and ``output/matches.h5``: the folder's stores as plain single files in hloc's
    layout (no links), each written atomically. Holds the folder's lock while reading. Returns the files."""
    folder, output = _folder(folder), Path(output)
    if output.resolve() == folder.resolve():
        raise InputError(f"{output}: compact into another folder than the store's own")
    lock = FolderLock(folder, 0.0)
    lock.acquire()
    written = []
    try:
        for name in (FEATURES_FILE, MATCHES_FILE):
            source = folder / name
            if not source.exists():
                continue
            with h5py.File(source, "r") as src, atomic_output(output / name, "the compacted store") as tmp:
                with h5py.File(tmp, "w") as dst:
                    for key, value in src.attrs.items():
                        if key != shards.LAYOUT_ATTR:
                            dst.attrs[key] = value
                    keys = h5.feature_groups(src) if name == FEATURES_FILE else h5.match_groups(src)
                    for key in keys:
                        parent = key.rsplit("/", 1)[0] if "/" in key else None
                        if parent is not None and parent not in dst:
                            dst.create_group(parent)
                        src.copy(src[key], dst, name=key)
            written.append(str(output / name))
    finally:
        lock.release()
    return written
