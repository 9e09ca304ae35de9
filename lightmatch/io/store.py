"""THE output store: ``features.h5`` + ``matches.h5`` in one folder, written crash-safely by every command.

Single-pair ``match``, batch ``match``, ``extract``, ``eval pose -o`` and training caches all write through
:class:`OutputStore`, so one set of rules holds everywhere:

**Lock.** Opening takes an exclusive advisory lock on ``OUTDIR/.lightmatch.lock`` (``flock``); a second writer
either waits for it (``wait`` seconds) or fails at once with a one-line :class:`OutputError`. Two runs can
therefore never lose each other's writes.

**Settings.** A store made with other extractor/matcher settings (file attributes: the models and their
settings, the matcher's weights, the precision run; the device is recorded too) is refused (:class:`ConfigError`)
unless ``overwrite`` discards it.

**Parts.** HDF5 files can be corrupted by a process killed while writing. Completed work (the features of an
image, the matches of a pair) is written into a *part* file under ``OUTDIR/.parts/`` holding one chunk of items
(``chunk`` items or ``SEAL_SECONDS`` of work, whichever comes first; the environment variable
``LIGHTMATCH_STORE_CHUNK`` sets the default chunk): written under a hidden temporary name, flushed to disk, then
atomically renamed to ``<run>-<counter>-f|m.h5`` (*sealed*). A part that exists is complete; a killed run leaves at
most one temporary file, removed by the next run, and redoes at most one chunk.

**Consolidation.** At the end of a run (also after Ctrl-C) and at the start of the next run, the parts are
*renamed* into ``OUTDIR/shards/`` (never copied) and the two small top files ``features.h5`` and ``matches.h5``,
whose groups are HDF5 external links into the shards plus an index, are brought up to date without copying them
(:mod:`lightmatch.io.shards` describes the layout and why each step is crash-safe). Each step costs O(new items),
not O(all items). Consolidation is idempotent, so a kill at any point of it is repaired by the next run. A run
that ends cleanly (:meth:`OutputStore.finish`) also removes the empty ``.parts/`` folder and the lock file. A store
in the single-file layout of earlier versions is read as it is and upgraded at its first consolidation.

**Invariant.** Every pair in ``matches.h5`` has both its images in ``features.h5``: :meth:`OutputStore.commit`
refuses matches whose images it does not hold, and features are consolidated before matches.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from ..errors import InputError, OutputError
from ..types import Features, Matches
from . import h5, shards
from .atomic import ATOMIC_TEMPORARY, WRITE_ERRORS, fsync_dir, write_error
from .files import check_regular_file
from .lock import LOCK_FILE, FolderLock
from .settings import compare_attrs

FEATURES_FILE = "features.h5"
MATCHES_FILE = "matches.h5"
PARTS_DIR = ".parts"
MATCH_DEFAULTS = {"lightmatch_verify": "none"}  # attributes a store written before they existed is read with
CHUNK_ENV = "LIGHTMATCH_STORE_CHUNK"
DEFAULT_CHUNK = 256
SEAL_SECONDS = 30.0


def default_chunk() -> int:
    """Items per part file: ``LIGHTMATCH_STORE_CHUNK`` when set to a positive integer, else 256."""
    try:
        return max(1, int(os.environ.get(CHUNK_ENV, DEFAULT_CHUNK)))
    except ValueError:
        return DEFAULT_CHUNK


class PairIndex:
    """Membership of pair keys (hloc's ``name0/name1``), held as integers: a million pairs load in one array read."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._keys: set[int] = set()

    @classmethod
    def from_arrays(cls, names: list[str], pairs: np.ndarray) -> "PairIndex":
        index = cls()
        index._ids = {n: i for i, n in enumerate(names)}
        index._keys = set(((pairs[:, 0].astype(np.int64) << 32) | pairs[:, 1].astype(np.int64)).tolist())
        return index

    def _key(self, key: str, add: bool) -> Optional[int]:
        ids = []
        for name in key.split("/"):
            if name not in self._ids:
                if not add:
                    return None
                self._ids[name] = len(self._ids)
            ids.append(self._ids[name])
        return (ids[0] << 32) | ids[1]

    def add(self, key: str) -> None:
        self._keys.add(self._key(key, True))

    def __contains__(self, key: str) -> bool:
        value = self._key(key, False)
        return value is not None and value in self._keys

    def __len__(self) -> int:
        return len(self._keys)


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
    finishes the run (consolidates and tidies up); leaving it by an exception seals the open part and releases
    the lock, keeping the parts for the next run. ``chunk``: items per part file (default :func:`default_chunk`).
    """

    def __init__(self, folder: str | os.PathLike, feature_attrs: dict, match_attrs: Optional[dict] = None,
                 overwrite: bool = False, wait: float = 0.0, chunk: Optional[int] = None) -> None:
        self.folder = Path(folder)
        self.features_path = self.folder / FEATURES_FILE
        self.matches_path = self.folder / MATCHES_FILE
        self.parts_dir = self.folder / PARTS_DIR
        self.shards_dir = self.folder / shards.SHARDS_DIR
        self.lock_path = self.folder / LOCK_FILE
        self.feature_attrs = feature_attrs
        self.match_attrs = match_attrs
        self.overwrite = overwrite
        self.wait = wait
        self.chunk = chunk or default_chunk()
        self.removed: list[str] = []
        self._folder_lock = FolderLock(self.folder, wait)
        self._store: Optional[h5py.File] = None
        self._features: dict[str, Optional[Path]] = {}  # name -> part file holding it (None: features.h5)
        self._pairs = PairIndex()
        self._run = f"{time.time_ns():020d}-{os.getpid()}"
        self._counter = 0
        self._part: Optional[h5py.File] = None  # the open (unsealed) part: its temporary and final names
        self._part_paths: tuple[Path, Path] = (Path(), Path())
        self._part_names: list[str] = []
        self._part_matches = False
        self._part_items = 0
        self._part_since = 0.0
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
                if self.shards_dir.is_dir():  # the data of the top files removed above
                    shutil.rmtree(self.shards_dir)
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
            self._remove_stale()
            self._finished = True
        finally:
            self.close()

    def close(self) -> None:
        """Release the folder without consolidating: the open part is sealed and parts stay for the next run; an
        empty parts folder and the lock file are removed (a run that failed before writing anything leaves the
        folder as it found it, and removes it when this store created it)."""
        try:
            self._seal()
        except OutputError:
            pass  # a part that cannot be written (disk full) is dropped: its work is redone by the next run
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
        """Temporary files of killed runs: part files being written, stores being consolidated or replaced, top
        files being updated, and any other file of the folder being replaced atomically
        (:func:`~lightmatch.io.atomic.atomic_output`'s names, e.g. an evaluation's ``summary.json``)."""
        stale = list(self.parts_dir.glob(".*.tmp")) + list(self.folder.glob(ATOMIC_TEMPORARY))
        for name in (FEATURES_FILE, MATCHES_FILE):
            stale += list(self.folder.glob(f".{name}.*.tmp"))
            stale += [self.shards_dir / f".{name}.work", self.shards_dir / f".{name}.spare.tmp"]
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
        """What the store holds: from the top files' indexes (one read each), or by walking a single-file store."""
        if self.features_path.exists():
            self._store = h5py.File(self.features_path, "r")
            self._features = {name: None for name in h5.feature_groups(self._store)}
        if self.matches_path.exists():
            with h5py.File(self.matches_path, "r") as handle:
                if shards.is_sharded(handle):
                    self._pairs = PairIndex.from_arrays(*h5.indexed_pairs(handle))
                else:
                    self._pairs = PairIndex()
                    for key in h5.match_groups(handle):
                        self._pairs.add(key)

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
        """Features of ``name`` from the open part, a part file written in this run, or ``features.h5``."""
        part = self._features[name]
        if part is None:
            return h5.get_features(self._store[name])
        if self._part is not None and part == self._part_paths[0]:
            return h5.get_features(self._part["features"][name])
        with h5py.File(part, "r") as handle:
            return h5.get_features(handle["features"][name])

    # -- writing
    def commit(self, features: Optional[dict[str, Features]] = None,
               matches: Optional[dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]] = None) -> Path:
        """Add ``features`` (name -> Features) and ``matches`` ((name0, name1) -> (Matches, inliers or None)) to the
        open part file; returns the part's path (its temporary name until it is sealed). The work survives any
        crash once its part is sealed: after
        ``chunk`` items or ``seal_seconds``, and when the store is finished or closed.

        Matches are refused (:class:`ValueError`) unless both images' features are stored or in the same call:
        the store never holds a pair without its features."""
        features, matches = features or {}, matches or {}
        missing = {n for pair in matches for n in pair if n not in features and n not in self._features}
        if missing:
            raise ValueError(f"matches committed before the features of {', '.join(sorted(missing))}")
        if self._part is None:
            self._counter += 1
            self._part_paths = (self.parts_dir / f".{self._run}-{self._counter:07d}.h5.tmp", Path())
            self._part = open_part(self._part_paths[0], self.feature_attrs, self.match_attrs)
            self._part_since = time.monotonic()
        tmp = self._part_paths[0]
        try:
            put_items(self._part, features, matches)
        except WRITE_ERRORS as exc:
            self._undo(features, matches)
            raise write_error(self._final(), "results", exc) from exc
        for name in features:
            self._features[name] = tmp
            self._part_names.append(name)
        for name0, name1 in matches:
            self._pairs.add(h5.names_to_pair(name0, name1))
        self._part_items += len(features) + len(matches)
        self._part_matches = self._part_matches or bool(matches)
        if self._part_items >= self.chunk or time.monotonic() - self._part_since >= SEAL_SECONDS:
            return self._seal()
        return tmp

    def _final(self) -> Path:
        """The name the open part gets when sealed: ``-m`` when it holds matches, else ``-f``."""
        return self.parts_dir / f"{self._run}-{self._counter:07d}-{'m' if self._part_matches else 'f'}.h5"

    def _undo(self, features: dict, matches: dict) -> None:
        """After a failed write into the open part: remove what the failed call wrote and seal the items committed
        before it (finished work is kept); a part that cannot be repaired, or holds nothing, is dropped."""
        try:
            for name in features:
                if name in self._part["features"]:
                    del self._part["features"][name]
            for name0, name1 in matches:
                key = h5.names_to_pair(name0, name1)
                if key in self._part["matches"]:
                    del self._part["matches"][key]
            if self._part_items:
                self._seal()
                return
        except (*WRITE_ERRORS, OutputError):
            pass
        if self._part is not None:
            self._drop_part()

    def _seal(self) -> Optional[Path]:
        """Make the open part durable under its final name; returns it (None when no part is open)."""
        if self._part is None:
            return None
        handle, self._part = self._part, None
        final = self._final()
        try:
            seal_part(handle, self._part_paths[0], final)
        except OutputError:
            self._forget_part()
            raise
        for name in self._part_names:
            self._features[name] = final
        self._part_items, self._part_names, self._part_matches = 0, [], False
        return final

    def _drop_part(self) -> None:
        handle, self._part = self._part, None
        try:
            handle.close()
        except WRITE_ERRORS:
            pass
        self._part_paths[0].unlink(missing_ok=True)
        self._forget_part()

    def _forget_part(self) -> None:
        """The open part was lost: its features are not stored (its pairs stay in the index of this run only,
        which ends here)."""
        for name in self._part_names:
            self._features.pop(name, None)
        self._part_items, self._part_names, self._part_matches = 0, [], False

    def consolidate(self) -> int:
        """Seal the open part, rename every part file into the shards and bring ``features.h5`` and
        ``matches.h5`` up to date (:mod:`lightmatch.io.shards`); returns how many parts were added. Safe to
        interrupt at any point: the next run finishes the job.

        Closes the handle :meth:`read_features` uses: call it when the run's work is done."""
        self._seal()
        parts = self._parts()
        names = shards.shard_names(self.folder)  # shards not linked yet: a run killed while consolidating
        pending = bool(names) and (shards.applied_shards(self.features_path) != names or (
            self.matches_path.exists() and shards.applied_shards(self.matches_path) != names))
        if not parts and not pending:
            return 0
        if self._store is not None:
            self._store.close()
            self._store = None
        for part in parts:
            try:
                with h5py.File(part, "r"):
                    pass
            except OSError as exc:
                raise InputError(f"{part}: unreadable part file ({exc}); delete it to redo its work") from None
        try:
            for kind in shards.KINDS:
                shards.adopt_single_file(self.folder, kind)
            shards.add_parts(self.folder, parts)
            fsync_dir(self.parts_dir)
        except WRITE_ERRORS as exc:
            raise write_error(self.shards_dir, "the store", exc) from exc
        for path, defaults in ((self.features_path, None), (self.matches_path, MATCH_DEFAULTS)):
            try:
                shards.update_top(self.folder, path.stem, defaults)
            except WRITE_ERRORS as exc:
                raise write_error(path, "the store", exc) from exc
        return len(parts)


def open_part(tmp: Path, feature_attrs: dict, match_attrs: Optional[dict]) -> h5py.File:
    """A new part file at the temporary name ``tmp``, with its ``features`` and ``matches`` groups."""
    try:
        handle = h5py.File(tmp, "w")
        handle.attrs["lightmatch_part"] = 1
        h5.set_attrs(handle.create_group("features"), feature_attrs)
        h5.set_attrs(handle.create_group("matches"), match_attrs)
    except WRITE_ERRORS as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(tmp, "results", exc) from exc
    return handle


def put_items(handle: h5py.File, features: dict[str, Features],
              matches: dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]) -> None:
    for name, feats in features.items():
        h5.put_features(handle["features"], name, feats)
    for (name0, name1), (m, inliers) in matches.items():
        h5.put_matches(handle["matches"], name0, name1, m, inliers)


def seal_part(handle: h5py.File, tmp: Path, final: Path) -> None:
    """Close the part ``handle`` (written at ``tmp``), flush it to disk and rename it to ``final``. Any write error
    removes the temporary file and raises a one-line :class:`OutputError` naming ``final``."""
    try:
        handle.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except WRITE_ERRORS as exc:
        raise write_error(final, "results", exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
