"""Batch extraction and matching over many images and pairs: each image extracted once, resumable, crash-safe.

Data flow of :func:`match_batch`::

    pairs ──► plan (which image to load, extract or read back before each pair, what to drop after it)
          ──► PrefetchLoader (decode + EXIF + resize in worker threads, ahead of the network)
          ──► extract (main thread) ──► cache ──► match ──► verify ──► plot ──► part file

**Output folder.** ``OUTDIR/features.h5`` and ``OUTDIR/matches.h5`` in hloc's layout (:mod:`lightmatch.io.h5`),
with the extractor, matcher and verification settings as file attributes.

**Crash safety.** HDF5 files can be corrupted by a process killed while writing, and copying a whole store per
pair (:func:`lightmatch.io.h5.atomic_h5`) costs O(store) per pair. Instead every completed piece of work (the
features of one image, the matches of one pair) is written to a small HDF5 *part* file under ``OUTDIR/.parts/``:
written to a hidden temporary name, flushed to disk, then atomically renamed to ``<run>-<counter>-f|m.h5``. A
part that exists is complete; a killed run leaves at most one temporary file, removed by the next run. At the
end of a run (also after Ctrl-C) and at the start of the next run the parts are *consolidated*: copied into
``features.h5`` then ``matches.h5``, each replaced atomically (one copy of each store per run, not per pair),
and only then deleted. Consolidation is idempotent, so a kill at any point of it is repaired by the next run.
Parts are ordinary hloc-layout HDF5 files (image groups under ``features/``, pair groups under ``matches/``),
readable before consolidation. A lock file (``OUTDIR/.lightmatch.lock``) keeps two runs out of one folder.

**Resume.** A pair counts as done when ``matches.h5`` holds it (in either order) and ``features.h5`` holds both
its images; an image with features in ``features.h5`` is read back instead of extracted. Rerunning a killed
command therefore does only what is missing, and since matching reads features through the same float32 round
trip whether they were just extracted or read back (:func:`lightmatch.io.h5.canonical_features`), the final
files equal those of an uninterrupted run. A store made with other settings is refused (:class:`ConfigError`)
unless ``overwrite`` discards it.

**Memory.** Features stay in memory from the first pair that needs them to their last pair. The order of the
pairs is known in advance, so when more than ``cache_images`` images would be held, the one needed again
furthest in the future is dropped (Belady's rule) and read back from its part file when needed again.

**Bad input.** A missing, empty, truncated or non-image file fails that image only: its pairs are reported as
failed (events and summary), the batch goes on.

The library never prints: progress, per-image and per-pair results go to an ``on_event`` callback.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import h5py
import numpy as np

from ..errors import ConfigError, InputError, LightmatchError, OutputError
from ..io import h5
from ..models.base import Extractor, Matcher
from ..types import Features, Matches
from .loader import LoadedImage, PrefetchLoader, extract_loaded, load_for_extractor
from .match import store_attributes
from .verify import VerifyOptions  # defined in verify.py, re-exported for earlier imports

try:  # POSIX advisory locks; without them (Windows) two runs into one folder are not prevented
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

FEATURES_FILE = "features.h5"
MATCHES_FILE = "matches.h5"
PARTS_DIR = ".parts"
LOCK_FILE = ".lightmatch.lock"
TIME_KEYS = ("decode", "wait", "extract", "read", "match", "verify", "viz", "write", "consolidate")


# --------------------------------------------------------------------------------------------------- options ---

def batch_attributes(extractor: Extractor, matcher: Optional[Matcher] = None,
                     verify: Optional[VerifyOptions] = None) -> dict:
    """Store attributes of a batch: :func:`~lightmatch.pipeline.match.store_attributes` plus the verification."""
    attrs = store_attributes(extractor, matcher)
    if matcher is not None:
        attrs["lightmatch_verify"] = asdict(verify) if verify is not None else "none"
    return attrs


def _normalise_attrs(attrs: dict, defaults: Optional[dict] = None) -> dict:
    """``lightmatch_*`` attributes as comparable plain values (JSON text of dicts with sorted keys)."""
    out = dict(defaults or {})
    for key, value in attrs.items():
        if not key.startswith("lightmatch_") or key.startswith("lightmatch_part"):
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
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


# ---------------------------------------------------------------------------------------------------- events ---

@dataclass
class BatchStart:
    """Sent once before the work starts: how much there is to do."""

    pairs_total: int
    pairs_todo: int
    images_total: int
    images_todo: int
    removed: list[str] = field(default_factory=list)  # files discarded by ``overwrite``

    def to_json(self) -> dict:
        return {"type": "start", **asdict(self)}


@dataclass
class ImageEvent:
    """One image: ``extracted``, ``skipped`` (features already stored) or ``failed``."""

    name: str
    status: str
    keypoints: Optional[int] = None
    error: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"type": "image", "image": self.name, "status": self.status}
        if self.keypoints is not None:
            out["keypoints"] = self.keypoints
        if self.error is not None:
            out["error"] = self.error
        if self.timings:
            out["timings_ms"] = {k: round(v * 1000, 2) for k, v in self.timings.items()}
        return out


@dataclass
class PairEvent:
    """One pair: ``ok``, ``failed``, ``skipped`` (already in the store) or ``ignored`` (self-pair or repeat)."""

    name0: str
    name1: str
    status: str
    keypoints0: Optional[int] = None
    keypoints1: Optional[int] = None
    matches: Optional[int] = None
    inliers: Optional[int] = None
    error: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out: dict = {"type": "pair", "image0": self.name0, "image1": self.name1, "status": self.status}
        for key in ("keypoints0", "keypoints1", "matches", "inliers", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.timings:
            out["time_ms"] = round(sum(self.timings.values()) * 1000, 2)
            out["timings_ms"] = {k: round(v * 1000, 2) for k, v in self.timings.items()}
        if self.warnings:
            out["warnings"] = self.warnings
        return out


Event = Union[BatchStart, ImageEvent, PairEvent]


@dataclass
class BatchSummary:
    """What a batch did. Times are seconds; ``decode`` ran in background workers, overlapped with the rest."""

    command: str
    features_path: str
    matches_path: Optional[str] = None
    pairs_total: int = 0
    pairs_matched: int = 0
    pairs_skipped: int = 0
    pairs_failed: int = 0
    pairs_ignored: int = 0
    images_total: int = 0
    images_extracted: int = 0
    images_reused: int = 0
    images_failed: int = 0
    failed_images: dict[str, str] = field(default_factory=dict)
    failed_pairs: list[tuple[str, str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    times: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in TIME_KEYS})
    workers: int = 0
    interrupted: bool = False

    @property
    def pairs_per_s(self) -> float:
        return self.pairs_matched / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images_extracted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed (and the run was not interrupted)."""
        return not (self.pairs_failed or self.images_failed or self.interrupted)

    def to_json(self) -> dict:
        out = {"type": "summary", "command": self.command, "features": self.features_path}
        if self.matches_path is not None:
            out["matches"] = self.matches_path
        for key in ("pairs_total", "pairs_matched", "pairs_skipped", "pairs_failed", "pairs_ignored"):
            if self.command == "match" or getattr(self, key):
                out[key] = getattr(self, key)
        out.update(images_total=self.images_total, images_extracted=self.images_extracted,
                   images_reused=self.images_reused, images_failed=self.images_failed)
        if self.failed_images:
            out["failed_images"] = self.failed_images
        if self.failed_pairs:
            out["failed_pairs"] = [list(p) for p in self.failed_pairs]
        out["elapsed_s"] = round(self.elapsed_s, 3)
        if self.command == "match":
            out["pairs_per_s"] = round(self.pairs_per_s, 3)
        out["images_per_s"] = round(self.images_per_s, 3)
        out["time_s"] = {k: round(v, 3) for k, v in self.times.items()}
        out["workers"] = self.workers
        out["interrupted"] = self.interrupted
        return out


# ----------------------------------------------------------------------------------------------- output store ---

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputStore:
    """``features.h5`` + ``matches.h5`` in one folder, written incrementally through atomically renamed part files.

    Use as a context manager (or :meth:`open` / :meth:`close`). Opening takes the folder's lock, removes stale
    temporary files, discards the stores when ``overwrite`` (else consolidates parts left by a killed run), and
    checks that the stores were made with ``feature_attrs`` / ``match_attrs`` (:class:`ConfigError` if not).
    """

    def __init__(self, folder: str | os.PathLike, feature_attrs: dict, match_attrs: Optional[dict] = None,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.features_path = self.folder / FEATURES_FILE
        self.matches_path = self.folder / MATCHES_FILE
        self.parts_dir = self.folder / PARTS_DIR
        self.feature_attrs = feature_attrs
        self.match_attrs = match_attrs
        self.overwrite = overwrite
        self.removed: list[str] = []
        self._lock_fd: Optional[int] = None
        self._store: Optional[h5py.File] = None
        self._features: dict[str, Optional[Path]] = {}  # name -> part file holding it (None: features.h5)
        self._pairs: set[str] = set()
        self._run = f"{time.time_ns():020d}"
        self._counter = 0

    # -- life cycle
    def open(self) -> "OutputStore":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.parts_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write output here ({exc.strerror or exc})") from exc
        self._lock()
        try:
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

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> "OutputStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _lock(self) -> None:
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the lock file ({exc.strerror or exc})") from exc
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputError(f"{self.folder}: another lightmatch run is writing to this folder; wait for it "
                                  "or choose another output folder") from None
        self._lock_fd = fd

    def _remove_stale(self) -> None:
        """Temporary files of killed runs: part files being written, stores being consolidated."""
        stale = list(self.parts_dir.glob(".*.tmp"))
        for name in (FEATURES_FILE, MATCHES_FILE):
            stale += list(self.folder.glob(f".{name}.*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.parts_dir.glob("*.h5") if not p.name.startswith("."))

    def _check(self) -> None:
        for path, wanted, what, defaults in (
                (self.features_path, self.feature_attrs, "extractor", None),
                (self.matches_path, self.match_attrs, "matcher", {"lightmatch_verify": "none"})):
            if wanted is None or not path.exists():
                continue
            try:
                with h5py.File(path, "r") as handle:
                    stored = dict(handle.attrs)
            except OSError as exc:
                raise InputError(f"{path}: not a readable HDF5 file ({exc}); remove it or use --overwrite") from exc
            _compare_attrs(path, stored, wanted, what, defaults)

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
        durably as one part file; returns its path. Once this returns, the work survives any crash."""
        features, matches = features or {}, matches or {}
        self._counter += 1
        final = self.parts_dir / f"{self._run}-{self._counter:07d}-{'m' if matches else 'f'}.h5"
        tmp = self.parts_dir / f".{final.name}.tmp"
        try:
            with h5py.File(tmp, "w") as handle:
                handle.attrs["lightmatch_part"] = 1
                group = handle.create_group("features")
                h5._set_attrs(group, self.feature_attrs)
                for name, feats in features.items():
                    h5.put_features(group, name, feats)
                group = handle.create_group("matches")
                h5._set_attrs(group, self.match_attrs)
                for (name0, name1), (m, inliers) in matches.items():
                    h5.put_matches(group, name0, name1, m, inliers)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.parts_dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{self.parts_dir}: cannot write results ({exc.strerror or exc})") from exc
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
                                          ("matches", self.matches_path, "matcher", {"lightmatch_verify": "none"})):
            todo = [part for part, *has in contents if has[0 if key == "features" else 1]]
            if not todo:
                continue
            with h5.atomic_h5(path) as store:
                for part in todo:
                    with h5py.File(part, "r") as handle:
                        group = handle[key]
                        if not any(k.startswith("lightmatch_") for k in store.attrs):
                            for k, v in group.attrs.items():
                                store.attrs[k] = v
                        else:
                            _compare_attrs(path, dict(store.attrs), dict(group.attrs), what, defaults,
                                           source=part)
                        names = h5.feature_groups(group) if key == "features" else h5.match_groups(group)
                        for name in names:
                            if name in store:
                                del store[name]
                            handle.copy(group[name], store, name=name)
        _fsync_dir(self.folder)
        for part in parts:
            part.unlink(missing_ok=True)
        _fsync_dir(self.parts_dir)
        return len(parts)


def _compare_attrs(path: Path, stored: dict, wanted: dict, what: str, defaults: Optional[dict],
                   source: Optional[Path] = None) -> None:
    s, w = _normalise_attrs(stored, defaults), _normalise_attrs(wanted, defaults)
    diffs = [k for k in sorted(set(s) | set(w)) if s.get(k) != w.get(k)]
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


# ------------------------------------------------------------------------------------------------------ plan ---

@dataclass
class _Job:
    """An image for the loader to decode: for extraction, or only for a plot."""

    name: str
    extract: bool

    def __str__(self) -> str:
        return self.name


@dataclass
class _Load:
    name: str
    job: Optional[int]  # index into the loader's jobs, or None when only read back from the store
    extract: bool


@dataclass
class _Step:
    name0: str
    name1: str
    loads: list[_Load]
    evict: list[str]


def plan_pairs(pairs: Sequence[tuple[str, str]], has_features: Callable[[str], bool], decode_always: bool,
               capacity: int) -> tuple[list[_Step], list[_Job]]:
    """Schedule the loads of a list of distinct pairs (no self-pairs).

    Before each pair, its images not in the cache are loaded: extracted from a decoded image the first time when
    the store lacks them, otherwise read back (and decoded too when ``decode_always``, for plots). After each
    pair, images with no later pair are dropped, and while more than ``capacity`` are held, the one needed again
    furthest ahead (Belady's optimal rule; the future is known). Returns the steps and the decode jobs in order.
    """
    uses: dict[str, deque[int]] = defaultdict(deque)
    for i, (a, b) in enumerate(pairs):
        uses[a].append(i)
        uses[b].append(i)
    cached: set[str] = set()
    known: set[str] = set()
    heap: list[tuple[int, str]] = []
    steps: list[_Step] = []
    jobs: list[_Job] = []
    for a, b in pairs:
        loads = []
        for name in (a, b):
            if name in cached:
                continue
            extract = name not in known and not has_features(name)
            job = None
            if extract or decode_always:
                job = len(jobs)
                jobs.append(_Job(name, extract))
            loads.append(_Load(name, job, extract))
            cached.add(name)
            known.add(name)
        evict = []
        for name in (a, b):
            uses[name].popleft()
            if uses[name]:
                heapq.heappush(heap, (-uses[name][0], name))
            else:
                cached.discard(name)
                evict.append(name)
        while len(cached) > capacity and heap:
            neg_next, name = heapq.heappop(heap)
            if name in cached and uses[name] and uses[name][0] == -neg_next:
                cached.discard(name)
                evict.append(name)
        steps.append(_Step(a, b, loads, evict))
    return steps, jobs


def unique_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Pairs without self-pairs and repeats (in either order, first kept), and the dropped ones with a reason."""
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str]] = []
    seen: set[frozenset] = set()
    for a, b in pairs:
        if a == b:
            dropped.append((a, b, "an image paired with itself"))
            continue
        key = frozenset((a, b))
        if key in seen:
            dropped.append((a, b, "repeats an earlier pair"))
            continue
        seen.add(key)
        kept.append((a, b))
    return kept, dropped


def viz_filename(name0: str, name1: str) -> str:
    """Plot file name of a pair, as SuperGlue's demo: ``{name0}_{name1}_matches.png`` without extensions."""
    def stem(name: str) -> str:
        path = Path(name)
        return path.with_suffix("").as_posix().replace("/", "-") if path.suffix else name.replace("/", "-")

    return f"{stem(name0)}_{stem(name1)}_matches.png"


# ---------------------------------------------------------------------------------------------------- batches ---

@dataclass
class _Entry:
    features: Features
    viz: Optional[np.ndarray] = None
    viz_scale: float = 1.0


class _Clock:
    """Accumulates seconds per stage into a summary and into the current item's timings."""

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        self.item: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        self.summary.times[key] = self.summary.times.get(key, 0.0) + seconds
        self.item[key] = self.item.get(key, 0.0) + seconds

    def take(self) -> dict[str, float]:
        item, self.item = self.item, {}
        return item


def _error_text(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text if isinstance(exc, LightmatchError) else f"{type(exc).__name__}: {text}"


def _emit(on_event: Optional[Callable[[Event], None]], event: Event) -> None:
    if on_event is not None:
        on_event(event)


def _load_image(image_dir: Path, extractor: Extractor, keep_viz: bool) -> Callable[[_Job], LoadedImage]:
    def load(job: _Job) -> LoadedImage:
        return load_for_extractor(image_dir / job.name, job.name, extractor if job.extract else None, keep_viz)

    return load


def _extract(extractor: Extractor, loaded: LoadedImage, clock: _Clock) -> Features:
    start = time.perf_counter()
    try:
        feats = extract_loaded(extractor, loaded)
    except LightmatchError:
        raise
    except Exception as exc:  # e.g. out of memory on a huge image: that image fails, the batch goes on
        raise InputError(f"{loaded.name}: feature extraction failed ({_error_text(exc)})") from exc
    feats = h5.canonical_features(feats)
    clock.add("extract", time.perf_counter() - start)
    return feats


def match_batch(
    image_dir: str | os.PathLike,
    pairs: Iterable[tuple[str, str]],
    output_dir: str | os.PathLike,
    extractor: Extractor,
    matcher: Matcher,
    verify: Optional[VerifyOptions] = None,
    viz_dir: Optional[str | os.PathLike] = None,
    overwrite: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    cache_images: int = 256,
    on_event: Optional[Callable[[Event], None]] = None,
) -> BatchSummary:
    """Extract and match ``pairs`` of images under ``image_dir`` into ``output_dir/{features,matches}.h5``.

    Args:
        image_dir: root of the images; pair names are paths relative to it with ``/`` separators.
        pairs: ``(name0, name1)`` pairs; self-pairs and repeats (either order) are ignored.
        output_dir: output folder (see the module documentation for its layout, resume and crash safety).
        extractor, matcher: the models.
        verify: verify each pair geometrically and store its ``inliers`` (None: no verification).
        viz_dir: write a match plot per matched pair there (:func:`viz_filename`).
        overwrite: discard the folder's existing stores instead of resuming.
        workers, prefetch: decoding threads, and how many images they may decode ahead.
        cache_images: most images whose features are held in memory at once.
        on_event: called with a :class:`BatchStart`, then an :class:`ImageEvent` per image extracted or failed
            and a :class:`PairEvent` per pair, in order.

    Returns:
        A :class:`BatchSummary`; ``interrupted`` is set when a ``KeyboardInterrupt`` stopped the run (the work done
        so far is saved). Bad images fail their pairs only; a :class:`LightmatchError` is raised for what stops
        the whole batch (unwritable output, a store made with other settings).
    """
    start = time.perf_counter()
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    viz_dir = Path(viz_dir) if viz_dir is not None else None
    kept, dropped = unique_pairs(pairs)
    store = OutputStore(output_dir, batch_attributes(extractor), batch_attributes(extractor, matcher, verify),
                        overwrite)
    summary = BatchSummary("match", str(store.features_path), str(store.matches_path), workers=workers)
    summary.pairs_total = len(kept) + len(dropped)
    summary.pairs_ignored = len(dropped)
    summary.images_total = len({n for pair in kept for n in pair})
    clock = _Clock(summary)
    store.open()
    loader: Optional[PrefetchLoader] = None
    finished = False
    try:
        todo = [p for p in kept if not store.has_pair(*p)]
        summary.pairs_skipped = len(kept) - len(todo)
        steps, jobs = plan_pairs(todo, store.has_features, viz_dir is not None, cache_images)
        _emit(on_event, BatchStart(summary.pairs_total, len(todo), summary.images_total,
                                   sum(job.extract for job in jobs), store.removed))
        for a, b, reason in dropped:
            _emit(on_event, PairEvent(a, b, "ignored", error=reason))
        todo_set = set(todo)
        for a, b in kept:
            if (a, b) not in todo_set:
                _emit(on_event, PairEvent(a, b, "skipped"))
        loader = PrefetchLoader(jobs, _load_image(image_dir, extractor, viz_dir is not None), workers, prefetch)
        cache: dict[str, _Entry] = {}
        seen: set[str] = set()  # images extracted or read back once already in this run
        try:
            for step in steps:
                for load in step.loads:
                    _run_load(load, loader, extractor, store, cache, seen, summary, clock, on_event)
                _run_pair(step, cache, extractor, matcher, verify, viz_dir, store, summary, clock, on_event)
                for name in step.evict:
                    cache.pop(name, None)
        except KeyboardInterrupt:
            summary.interrupted = True
        finished = True
    finally:
        _close_run(loader, store, summary, consolidate=finished)
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _close_run(loader: Optional[PrefetchLoader], store: OutputStore, summary: BatchSummary,
               consolidate: bool) -> None:
    """End a run: stop the loader, merge the part files into the stores (unless the run failed before its loop
    ended), release the output folder."""
    if loader is not None:
        loader.close()
    try:
        if consolidate:
            t = time.perf_counter()
            store.consolidate()
            summary.times["consolidate"] += time.perf_counter() - t
    finally:
        store.close()


def _run_load(load: _Load, loader: PrefetchLoader, extractor: Extractor, store: OutputStore,
              cache: dict[str, _Entry], seen: set[str], summary: BatchSummary, clock: _Clock,
              on_event: Optional[Callable[[Event], None]]) -> None:
    """Bring one image into the cache: extract it, or read its features back (and decode it for a plot)."""
    name = load.name
    if name in summary.failed_images:
        if load.job is not None:
            loader.skip(load.job)
        return
    loaded: Optional[LoadedImage] = None
    try:
        if load.job is not None:
            t = time.perf_counter()
            result = loader.get(load.job)
            clock.add("wait", time.perf_counter() - t)
            if isinstance(result, Exception):
                raise result
            loaded = result
            clock.add("decode", loaded.decode_s)
        if load.extract:
            feats = _extract(extractor, loaded, clock)
            t = time.perf_counter()
            store.commit(features={name: feats})
            clock.add("write", time.perf_counter() - t)
            summary.images_extracted += 1
            _emit(on_event, ImageEvent(name, "extracted", len(feats), timings=dict(clock.item)))
        else:
            t = time.perf_counter()
            try:
                feats = store.read_features(name)
            except (KeyError, OSError, ValueError) as exc:
                raise InputError(f"{name}: cannot read its stored features ({exc}); rerun with --overwrite") from exc
            clock.add("read", time.perf_counter() - t)
            if name not in seen:  # features from an earlier run (not ones this run dropped and read again)
                summary.images_reused += 1
        seen.add(name)
    except InputError as exc:
        summary.images_failed += 1
        summary.failed_images[name] = _error_text(exc)
        _emit(on_event, ImageEvent(name, "failed", error=_error_text(exc)))
        return
    cache[name] = _Entry(feats, loaded.viz if loaded is not None else None,
                         loaded.viz_scale if loaded is not None else 1.0)


def _run_pair(step: _Step, cache: dict[str, _Entry], extractor: Extractor, matcher: Matcher,
              verify: Optional[VerifyOptions], viz_dir: Optional[Path], store: OutputStore, summary: BatchSummary,
              clock: _Clock, on_event: Optional[Callable[[Event], None]]) -> None:
    a, b = step.name0, step.name1
    bad = [n for n in (a, b) if n in summary.failed_images]
    if bad:
        error = "; ".join(f"image {n}: {summary.failed_images[n]}" for n in bad)
        summary.pairs_failed += 1
        summary.failed_pairs.append((a, b, error))
        _emit(on_event, PairEvent(a, b, "failed", error=error, timings=clock.take()))
        return
    e0, e1 = cache[a], cache[b]
    warnings = [f"{n}: no keypoints found (blank or featureless image)"
                for n, e in ((a, e0), (b, e1)) if len(e.features) == 0]
    try:
        t = time.perf_counter()
        m = matcher.match(e0.features, e1.features)
        m = Matches(m.matches0.detach().cpu(), m.scores0.detach().float().cpu(), m.stop_layer, m.info)
        clock.add("match", time.perf_counter() - t)
        inliers = None
        if verify is not None:
            from .verify import verify_pair

            t = time.perf_counter()
            inliers = verify_pair(e0.features, e1.features, m, verify.model, threshold=verify.threshold,
                                  confidence=verify.confidence, seed=verify.seed, max_iters=verify.max_iters,
                                  estimator=verify.estimator)
            clock.add("verify", time.perf_counter() - t)
        if viz_dir is not None:
            t = time.perf_counter()
            _plot(a, b, e0, e1, m, inliers, extractor, matcher, viz_dir / viz_filename(a, b))
            clock.add("viz", time.perf_counter() - t)
    except (ConfigError, OutputError):
        raise
    except Exception as exc:  # one pair failing (e.g. out of memory) does not stop the batch
        error = _error_text(exc)
        summary.pairs_failed += 1
        summary.failed_pairs.append((a, b, error))
        _emit(on_event, PairEvent(a, b, "failed", error=error, timings=clock.take()))
        return
    t = time.perf_counter()
    store.commit(matches={(a, b): (m, inliers)})
    clock.add("write", time.perf_counter() - t)
    summary.pairs_matched += 1
    _emit(on_event, PairEvent(a, b, "ok", len(e0.features), len(e1.features), m.num_matches,
                              None if inliers is None else int(inliers.sum()), timings=clock.take(),
                              warnings=warnings))


def _plot(a: str, b: str, e0: _Entry, e1: _Entry, m: Matches, inliers: Optional[np.ndarray],
          extractor: Extractor, matcher: Matcher, path: Path) -> None:
    from ..viz import plot_matches

    if e0.viz is None or e1.viz is None:
        return
    pairs = m.pairs()
    k0 = (e0.features.keypoints.numpy() + 0.5) * e0.viz_scale - 0.5
    k1 = (e1.features.keypoints.numpy() + 0.5) * e1.viz_scale - 0.5
    text = [f"{extractor.name} + {matcher.name}", f"keypoints {len(e0.features)} / {len(e1.features)}",
            f"matches {len(pairs)}" + (f", inliers {int(inliers.sum())}" if inliers is not None else "")]
    correct = inliers[pairs[:, 0]] if inliers is not None else None
    plot_matches(e0.viz, e1.viz, k0, k1, pairs, path, scores=m.matched_scores(), correct=correct,
                 title=f"{a}  {b}", text=text)


def extract_batch(
    image_dir: str | os.PathLike,
    names: Iterable[str],
    output_dir: str | os.PathLike,
    extractor: Extractor,
    overwrite: bool = False,
    workers: int = 2,
    prefetch: int = 8,
    on_event: Optional[Callable[[Event], None]] = None,
) -> BatchSummary:
    """Extract the features of ``names`` (relative to ``image_dir``) into ``output_dir/features.h5``.

    Images already in the store are skipped (``overwrite`` discards the store, and ``matches.h5`` with it, since
    its matches index the old keypoints). Same crash safety and events as :func:`match_batch`.
    """
    start = time.perf_counter()
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    names = list(dict.fromkeys(names))
    store = OutputStore(output_dir, batch_attributes(extractor), None, overwrite)
    summary = BatchSummary("extract", str(store.features_path), workers=workers)
    summary.images_total = len(names)
    clock = _Clock(summary)
    store.open()
    loader: Optional[PrefetchLoader] = None
    finished = False
    try:
        jobs = [_Job(n, True) for n in names if not store.has_features(n)]
        _emit(on_event, BatchStart(0, 0, len(names), len(jobs), store.removed))
        for name in names:
            if store.has_features(name):
                _emit(on_event, ImageEvent(name, "skipped"))
        loader = PrefetchLoader(jobs, _load_image(image_dir, extractor, False), workers, prefetch)
        try:
            for i, job in enumerate(jobs):
                _run_load(_Load(job.name, i, True), loader, extractor, store, {}, set(), summary, clock, on_event)
                clock.take()
        except KeyboardInterrupt:
            summary.interrupted = True
        finished = True
    finally:
        _close_run(loader, store, summary, consolidate=finished)
    summary.images_reused = summary.images_total - len(jobs)
    summary.elapsed_s = time.perf_counter() - start
    return summary
