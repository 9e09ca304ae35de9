"""THE output store: ``features.h5`` + ``matches.h5`` in one folder, written crash-safely by every command.

Single-pair ``match``, batch ``match``, ``extract``, ``eval pose -o`` and training caches all write through
:class:`OutputStore`, so one set of rules holds everywhere:

**Lock.** Opening takes an exclusive advisory lock on ``OUTDIR/.lightmatch.lock`` (``flock``); a second writer
either waits for it (``wait`` seconds) or fails at once with a one-line :class:`OutputError`. Two runs can
therefore never lose each other's writes.

**Settings.** A store made with other extractor/matcher settings (file attributes: the models and their
settings, the matcher's weights, the precision run; the device is recorded too) is refused (:class:`ConfigError`)
unless ``overwrite`` discards it.

**Parts.** HDF5 files can be corrupted by a process killed while writing. Every completed piece of work (the
features of one image, the matches of one pair) is written to a small HDF5 *part* file under ``OUTDIR/.parts/``:
written to a hidden temporary name, flushed to disk, then atomically renamed to ``<run>-<counter>-f|m.h5``. A
part that exists is complete; a killed run leaves at most one temporary file, removed by the next run.

**Consolidation.** At the end of a run (also after Ctrl-C) and at the start of the next run, the parts are copied
into ``features.h5`` then ``matches.h5``, each replaced atomically (one copy of each store per run), and only then
deleted. Consolidation is idempotent, so a kill at any point of it is repaired by the next run. A run that ends
cleanly (:meth:`OutputStore.finish`) also removes the empty ``.parts/`` folder and the lock file.

**Invariant.** Every pair in ``matches.h5`` has both its images in ``features.h5``: :meth:`OutputStore.commit`
refuses matches whose images it does not hold, and features are consolidated before matches.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..errors import ConfigError, InputError, OutputError
from ..types import Features, Matches
from . import h5
from .atomic import ATOMIC_TEMPORARY, WRITE_ERRORS, fsync_dir, write_error
from .files import check_regular_file
from .lock import LOCK_FILE, FolderLock

FEATURES_FILE = "features.h5"
MATCHES_FILE = "matches.h5"
PARTS_DIR = ".parts"
MATCH_DEFAULTS = {"lightmatch_verify": "none"}  # attributes a store written before they existed is read with
# recorded since stores name their weights, precision and device: compared only when both sides have them (a store
# written before is still resumed); the device is only recorded (the same precision gives the same results)
COMPARED_WHEN_RECORDED = ("lightmatch_matcher_weights", "lightmatch_precision")
RECORDED_ONLY = ("lightmatch_device",)


def unfinished_parts(store_file: str | os.PathLike) -> Optional[Path]:
    """The part folder beside ``store_file`` (a ``features.h5`` or ``matches.h5``) when it holds results of an
    interrupted run that are not in the store yet (rerunning that run consolidates them); else None."""
    parts = Path(store_file).parent / PARTS_DIR
    return parts if parts.is_dir() and any(p.suffix == ".h5" for p in parts.iterdir()) else None


class OutputStore:
    """``features.h5`` + ``matches.h5`` in one folder, written incrementally through atomically renamed part files.

    Use as a context manager (or :meth:`open` then :meth:`finish` / :meth:`close`). Opening takes the folder's
    lock (waiting up to ``wait`` seconds for another writer), removes stale temporary files, discards the stores
    when ``overwrite`` (else consolidates parts left by a killed run), and checks that the stores were made with
    ``feature_attrs`` / ``match_attrs`` (:class:`ConfigError` if not). Leaving the ``with`` block normally
    finishes the run (consolidates and tidies up); leaving it by an exception only releases the lock, keeping
    the parts for the next run.
    """

    def __init__(self, folder: str | os.PathLike, feature_attrs: dict, match_attrs: Optional[dict] = None,
                 overwrite: bool = False, wait: float = 0.0) -> None:
        self.folder = Path(folder)
        self.features_path = self.folder / FEATURES_FILE
        self.matches_path = self.folder / MATCHES_FILE
        self.parts_dir = self.folder / PARTS_DIR
        self.lock_path = self.folder / LOCK_FILE
        self.feature_attrs = feature_attrs
        self.match_attrs = match_attrs
        self.overwrite = overwrite
        self.wait = wait
        self.removed: list[str] = []
        self._folder_lock = FolderLock(self.folder, wait)
        self._store: Optional[h5py.File] = None
        self._features: dict[str, Optional[Path]] = {}  # name -> part file holding it (None: features.h5)
        self._pairs: set[str] = set()
        self._run = f"{time.time_ns():020d}-{os.getpid()}"
        self._counter = 0
        self._created: list[Path] = []  # folders open() made: removed again when a failed run leaves them empty
        self._finished = False

    # -- life cycle
    def open(self) -> "OutputStore":
        try:
            missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created = missing
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write output here ({exc.strerror or exc})") from exc
        self._folder_lock.acquire()
        try:
            try:
                self.parts_dir.mkdir(exist_ok=True)
            except OSError as exc:
                raise OutputError(f"{self.folder}: cannot write output here ({exc.strerror or exc})") from exc
            self._remove_stale()
            if self.overwrite:
                for path in [self.features_path, self.matches_path, *self._parts()]:
                    if path.exists():
                        path.unlink()
                        if path.parent == self.folder:
                            self.removed.append(str(path))
            else:
                self.consolidate()
            self._check()
            self._index()
        except BaseException:
            self.close()
            raise
        return self

    def finish(self) -> None:
        """End a run that completed (or was interrupted cleanly): consolidate the parts into the stores, remove the
        empty parts folder and the lock file, release the folder."""
        try:
            self.consolidate()
            self._remove_stale()  # left by a writer killed during this run (a Ray worker); it has been replaced
            self._finished = True
        finally:
            self.close()

    def close(self) -> None:
        """Release the folder without consolidating: parts stay for the next run; an empty parts folder and the
        lock file are removed (a run that failed before writing anything leaves the folder as it found it, and
        removes it when this store created it)."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._folder_lock.held:
            try:
                self.parts_dir.rmdir()  # only when empty
            except OSError:
                pass
            self._folder_lock.release()
            if not self._finished:
                for folder in self._created:  # innermost first; only while empty
                    try:
                        folder.rmdir()
                    except OSError:
                        break

    def __enter__(self) -> "OutputStore":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.finish()
        else:
            self.close()

    def _remove_stale(self) -> None:
        """Temporary files of killed runs: part files being written, stores being consolidated or replaced, and any
        other file of the folder being replaced atomically (:func:`~lightmatch.io.atomic.atomic_output`'s names,
        e.g. an evaluation's ``summary.json``)."""
        stale = list(self.parts_dir.glob(".*.tmp")) + list(self.folder.glob(ATOMIC_TEMPORARY))
        for name in (FEATURES_FILE, MATCHES_FILE):
            stale += list(self.folder.glob(f".{name}.*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)

    def _parts(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(p for p in self.parts_dir.glob("*.h5") if not p.name.startswith("."))

    def _check(self) -> None:
        for path, wanted, what, defaults in ((self.features_path, self.feature_attrs, "extractor", None),
                                             (self.matches_path, self.match_attrs, "matcher", MATCH_DEFAULTS)):
            if wanted is None or not path.exists():
                continue
            check_regular_file(path, "HDF5 store")  # a FIFO would block HDF5's open
            try:
                with h5py.File(path, "r") as handle:
                    stored = dict(handle.attrs)
            except OSError as exc:
                raise InputError(f"{path}: not a readable HDF5 file ({exc}); remove it or use --overwrite") from exc
            compare_attrs(path, stored, wanted, what, defaults)

    def _index(self) -> None:
        if self.features_path.exists():
            self._store = h5py.File(self.features_path, "r")
            self._features = {name: None for name in h5.feature_groups(self._store)}
        if self.matches_path.exists():
            with h5py.File(self.matches_path, "r") as handle:
                self._pairs = set(h5.match_groups(handle))

    # -- queries
    def has_features(self, name: str) -> bool:
        return name in self._features

    def feature_names(self) -> list[str]:
        return list(self._features)

    def has_pair(self, name0: str, name1: str) -> bool:
        """True when the pair (either order) and the features of both images are stored."""
        return (name0 in self._features and name1 in self._features
                and (h5.names_to_pair(name0, name1) in self._pairs or h5.names_to_pair(name1, name0) in self._pairs))

    def read_features(self, name: str) -> Features:
        """Features of ``name`` from the part file written in this run, or from ``features.h5``."""
        part = self._features[name]
        if part is None:
            return h5.get_features(self._store[name])
        with h5py.File(part, "r") as handle:
            return h5.get_features(handle["features"][name])

    # -- writing
    def commit(self, features: Optional[dict[str, Features]] = None,
               matches: Optional[dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]] = None) -> Path:
        """Write ``features`` (name -> Features) and ``matches`` ((name0, name1) -> (Matches, inliers or None))
        durably as one part file; returns its path. Once this returns, the work survives any crash.

        Matches are refused (:class:`ValueError`) unless both images' features are stored or in the same call:
        the store never holds a pair without its features."""
        features, matches = features or {}, matches or {}
        missing = {n for pair in matches for n in pair if n not in features and n not in self._features}
        if missing:
            raise ValueError(f"matches committed before the features of {', '.join(sorted(missing))}")
        self._counter += 1
        final = write_part(self.parts_dir / f"{self._run}-{self._counter:07d}-{'m' if matches else 'f'}.h5",
                           features, matches, self.feature_attrs, self.match_attrs)
        for name in features:
            self._features[name] = final
        for name0, name1 in matches:
            self._pairs.add(h5.names_to_pair(name0, name1))
        return final

    def consolidate(self) -> int:
        """Move every part file into ``features.h5`` and ``matches.h5`` (each replaced atomically); returns how
        many parts were consolidated. Safe to interrupt at any point: parts are deleted only afterwards.

        Closes the handle :meth:`read_features` uses: call it when the run's work is done."""
        parts = self._parts()
        if not parts:
            return 0
        if self._store is not None:
            self._store.close()
            self._store = None
        contents = []  # (path, has features, has matches)
        for part in parts:
            try:
                with h5py.File(part, "r") as handle:
                    contents.append((part, len(handle.get("features", {})) > 0, len(handle.get("matches", {})) > 0))
            except OSError as exc:
                raise InputError(f"{part}: unreadable part file ({exc}); delete it to redo its work") from None
        for key, path, what, defaults in (("features", self.features_path, "extractor", None),
                                          ("matches", self.matches_path, "matcher", MATCH_DEFAULTS)):
            todo = [part for part, *has in contents if has[0 if key == "features" else 1]]
            if todo:
                _merge_parts(todo, key, path, what, defaults)
        fsync_dir(self.folder)
        for part in parts:
            part.unlink(missing_ok=True)
        fsync_dir(self.parts_dir)
        return len(parts)


def write_part(final: Path, features: dict[str, Features],
               matches: dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]], feature_attrs: dict,
               match_attrs: Optional[dict]) -> Path:
    """Write one part file durably: to a hidden temporary name in the same folder, flushed, then renamed to
    ``final``. A part that exists is complete. Any write error (OSError such as ENOSPC, EFBIG, EROFS, EACCES, or
    h5py's RuntimeError) removes the temporary file and raises a one-line :class:`OutputError` naming ``final``."""
    tmp = final.parent / f".{final.name}.tmp"
    try:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["lightmatch_part"] = 1
            group = handle.create_group("features")
            h5.set_attrs(group, feature_attrs)
            for name, feats in features.items():
                h5.put_features(group, name, feats)
            group = handle.create_group("matches")
            h5.set_attrs(group, match_attrs)
            for (name0, name1), (m, inliers) in matches.items():
                h5.put_matches(group, name0, name1, m, inliers)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except WRITE_ERRORS as exc:
        raise write_error(final, "results", exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return final


class PartWriter:
    """The worker side of a store whose folder another process (the driver) holds: writes part files under the
    same rules as :meth:`OutputStore.commit`, never the stores themselves, and reads features from
    ``features.h5`` (consolidated by the driver before the workers read it). Takes no lock.

    ``run`` makes the part names unique among the writers of one run (e.g. the worker's index).
    """

    def __init__(self, folder: str | os.PathLike, feature_attrs: dict, match_attrs: Optional[dict],
                 run: str) -> None:
        self.folder = Path(folder)
        self.parts_dir = self.folder / PARTS_DIR
        self.feature_attrs = feature_attrs
        self.match_attrs = match_attrs
        self._run = f"{time.time_ns():020d}-{run}-{os.getpid()}"
        self._counter = 0
        self._store: Optional[h5py.File] = None

    def _features(self) -> h5py.File:
        if self._store is None:
            self._store = h5py.File(self.folder / FEATURES_FILE, "r")
        return self._store

    def read_features(self, name: str) -> Features:
        return h5.get_features(self._features()[name])

    def commit(self, features: Optional[dict[str, Features]] = None,
               matches: Optional[dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]] = None) -> Path:
        """As :meth:`OutputStore.commit`; matches need both images in ``features.h5`` or in the same call."""
        features, matches = features or {}, matches or {}
        missing = {n for pair in matches for n in pair if n not in features and n not in self._features()}
        if missing:
            raise ValueError(f"matches committed before the features of {', '.join(sorted(missing))}")
        self._counter += 1
        return write_part(self.parts_dir / f"{self._run}-{self._counter:07d}-{'m' if matches else 'f'}.h5",
                          features, matches, self.feature_attrs, self.match_attrs)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _merge_parts(parts: list[Path], key: str, path: Path, what: str, defaults: Optional[dict]) -> None:
    """Copy group ``key`` of every part into the store at ``path`` (replaced atomically)."""
    with h5.atomic_h5(path) as store:
        for part in parts:
            with h5py.File(part, "r") as handle:
                group = handle[key]
                if not any(k.startswith("lightmatch_") for k in store.attrs):
                    for k, v in group.attrs.items():
                        store.attrs[k] = v
                else:
                    compare_attrs(path, dict(store.attrs), dict(group.attrs), what, defaults, source=part)
                names = h5.feature_groups(group) if key == "features" else h5.match_groups(group)
                for name in names:
                    if name in store:
                        del store[name]
                    handle.copy(group[name], store, name=name)


def normalise_attrs(attrs: dict, defaults: Optional[dict] = None) -> dict:
    """``lightmatch_*`` attributes as comparable plain values (JSON text of dicts with sorted keys)."""
    out = dict(defaults or {})
    for key, value in attrs.items():
        if not key.startswith("lightmatch_") or key.startswith("lightmatch_part"):
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if isinstance(value, dict) and key.endswith("_settings"):  # one entry per setting: a difference names it
            for sub, item in value.items():
                out[f"{key}.{sub}"] = json.dumps(item, sort_keys=True) if isinstance(item, (dict, list)) else item
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        out[key] = value
    return out


def _show(value) -> str:
    """An attribute value for a message: ``{"a": 1, "b": "x"}`` as ``a=1 b=x``."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            return " ".join(f"{k}={v}" for k, v in json.loads(value).items())
        except ValueError:
            pass
    return "none" if value is None else str(value)


def compare_attrs(path: Path, stored: dict, wanted: dict, what: str, defaults: Optional[dict],
                  source: Optional[Path] = None) -> None:
    """Raise :class:`ConfigError` naming the first setting where ``stored`` and ``wanted`` differ."""
    s, w = normalise_attrs(stored, defaults), normalise_attrs(wanted, defaults)
    diffs = [k for k in sorted(set(s) | set(w)) if s.get(k) != w.get(k) and k not in RECORDED_ONLY
             and (k not in COMPARED_WHEN_RECORDED or (k in s and k in w))]
    if not diffs:
        return
    key = diffs[0]
    shown = key.rsplit(".", 1)[-1] if "." in key else key[len("lightmatch_"):]
    if source is not None:
        raise ConfigError(f"{source}: made with other {what} settings than {path} ({shown}: {_show(w.get(key))} "
                          f"vs {_show(s.get(key))}); delete the folder's .parts or use --overwrite")
    raise ConfigError(f"{path} was made with other {what} settings ({shown}: stored {_show(s.get(key))}, this run "
                      f"{_show(w.get(key))}); rerun with the same settings, use --overwrite to replace it, or write "
                      "to another folder")
