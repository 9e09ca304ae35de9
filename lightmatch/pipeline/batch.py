"""Batch extraction and matching over many images and pairs: each image extracted once, resumable, crash-safe.

Data flow of :func:`match_batch` (the driver: :class:`MatchRun`, :class:`ClosingRun`) and of the work, a
:class:`BatchRun` run by an :class:`Executor` (here, or on Ray workers: :mod:`.ray_executor`), both set by one
:class:`BatchOptions`::

    pairs ──► plan (:mod:`.plan`: which image to load, extract or read back before each pair, what to drop after)
          ──► PrefetchLoader (decode + EXIF + resize in worker threads, ahead of the network)
          ──► extract (main thread) ──► cache ──► match (groups of ``batch_pairs``) ──► verify ──► plot
          ──► part file (:mod:`..io.store`)

**Output folder.** ``OUTDIR/features.h5`` and ``OUTDIR/matches.h5`` in hloc's layout, written through
:class:`~lightmatch.io.store.OutputStore` (lock, settings check, crash-safe part files, consolidation), with the
extractor, matcher and verification settings as file attributes.

**Resume.** A pair counts as done when ``matches.h5`` holds it (in either order) and ``features.h5`` holds both
its images; an image with features in ``features.h5`` is read back instead of extracted. Rerunning a killed
command therefore does only what is missing, and since matching reads features through the same float32 round
trip whether they were just extracted or read back (:func:`lightmatch.io.h5.canonical_features`), the final
files equal those of an uninterrupted run.

**Memory.** Features stay in memory from the first pair that needs them to their last pair; when more than
``cache_images`` images would be held, the one needed again furthest in the future is dropped and read back from
its part file when needed again.

**Bad input.** A missing, empty, truncated or non-image file fails that image only: its pairs are reported as
failed (events and summary), the batch goes on.

The library never prints: progress, per-image and per-pair results go to an ``on_event`` callback
(:mod:`.events`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from ..defaults import BATCH_PAIRS, VIZ_MAX_MATCHES
from ..errors import ConfigError, InputError, LightmatchError, OutputError
from ..io import h5
from ..io.pairs import normalise_name
from ..io.store import OutputStore
from ..models.base import Extractor, Matcher
from ..types import Features, Matches
from .events import BatchStart, BatchSummary, EventCallback, ImageEvent, PairEvent, emit
from .loader import LoadedImage, PrefetchLoader, extract_loaded, load_for_extractor
from .match import plot_pair, store_attributes
from .plan import Job, Load, Step, plan_pairs, unique_pairs, viz_filename
from .rotation import chosen_degrees, chosen_turn
from .verify import VerifyOptions

# --------------------------------------------------------------------------------------------------- options ---

@dataclass
class BatchOptions:
    """How a batch runs, the same for every executor (the executor decides only where each job runs).

    Attributes:
        verify: verify each pair geometrically and store its ``inliers`` (None: no verification).
        viz_dir: write a match plot per matched pair there (:func:`viz_filename`).
        viz_max_matches: most match lines per plot (:func:`lightmatch.viz.plot_matches`; None or -1: all).
        overwrite: discard the folder's existing stores instead of resuming.
        workers, prefetch: decoding threads (per Ray worker), and how many images they may decode ahead.
        cache_images: most images whose features are held in memory at once (per Ray worker).
        batch_pairs: pairs matched together, padded and masked (:meth:`Matcher.match_many`); the same matches as
            one by one. 1 on the CPU, where batching was measured not to pay (docs/training.md).
    """

    verify: Optional[VerifyOptions] = None
    viz_dir: Optional[Path] = None
    viz_max_matches: Optional[int] = VIZ_MAX_MATCHES
    overwrite: bool = False
    workers: int = 2
    prefetch: int = 8
    cache_images: int = 256
    batch_pairs: int = BATCH_PAIRS

    def __post_init__(self) -> None:
        if self.viz_dir is not None:
            self.viz_dir = Path(self.viz_dir).resolve()  # Ray workers may run in another folder
        for name in ("workers", "prefetch", "cache_images", "batch_pairs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


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


def error_text(exc: BaseException) -> str:
    """``exc`` as one line for an event: its message, with the exception type unless it is ours."""
    text = str(exc).replace("\n", " ")
    return text if isinstance(exc, LightmatchError) else f"{type(exc).__name__}: {text}"


def _normalised(name: str, image_dir: Path) -> str:
    """``name`` as a clean path relative to ``image_dir``; a name outside it raises :class:`InputError`."""
    try:
        return normalise_name(name, image_dir)
    except ValueError as exc:
        raise InputError(f"image name {exc}") from None


class Store(Protocol):
    """Where a :class:`BatchRun` reads features back and writes its results: the :class:`OutputStore` locally; in a
    Ray worker, features the driver sent and results it gets back (:mod:`.ray_executor`)."""

    def read_features(self, name: str) -> Features:
        """The stored features of image ``name``."""

    def commit(self, features: Optional[dict[str, Features]] = None,
               matches: Optional[dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]] = None) -> object:
        """Store ``features`` (name -> Features) and ``matches`` ((name0, name1) -> (Matches, inliers or None))."""


class Executor(Protocol):
    """Where the jobs of a batch run: given the driver's :class:`BatchRun` (models, options, store, summary,
    events), an executor runs its work here or elsewhere. :class:`LocalExecutor` runs it in this process;
    :class:`~lightmatch.pipeline.ray_executor.RayExecutor` on Ray worker actors."""

    name: str  # the summary's ``executor``
    # where the models run, when not where the driver built them (the stores record it)
    device: Optional[torch.device]

    def match(self, work: "BatchRun", todo: list[tuple[str, str]]) -> None:
        """Match ``todo`` (pairs the store lacks), extracting the images whose features it lacks."""

    def extract(self, work: "BatchRun", names: list[str]) -> None:
        """Extract ``names`` (images the store lacks)."""


class LocalExecutor:
    """Runs every job in this process, in the planned order (decoding ahead in ``options.workers`` threads)."""

    name = "local"
    device = None

    def match(self, work: "BatchRun", todo: list[tuple[str, str]]) -> None:
        work.match(*work.plan(todo, work.store.has_features))

    def extract(self, work: "BatchRun", names: list[str]) -> None:
        work.extract(names)


def match_batch(
    image_dir: str | os.PathLike,
    pairs: Iterable[tuple[str, str]],
    output_dir: Optional[str | os.PathLike],
    extractor: Extractor,
    matcher: Matcher,
    options: Optional[BatchOptions] = None,
    on_event: Optional[EventCallback] = None,
    executor: Optional[Executor] = None,
) -> BatchSummary:
    """Extract and match ``pairs`` of images under ``image_dir`` into ``output_dir/{features,matches}.h5``.

    Args:
        image_dir: root of the images; pair names are paths relative to it with ``/`` separators.
        pairs: ``(name0, name1)`` pairs; self-pairs and repeats (either order) are ignored.
        output_dir: output folder (see the module documentation for its layout, resume and crash safety); None:
            a temporary one, removed at the end (only the events and plots are wanted; the summary names no files).
        extractor, matcher: the models (with another executor, the stores' settings are read from them).
        options: verification, plots, resume, threads, memory and batching (:class:`BatchOptions`; None: its
            defaults).
        on_event: called with a :class:`BatchStart`, then an :class:`ImageEvent` per image extracted or failed
            and a :class:`PairEvent` per pair (in order with the local executor).
        executor: where the jobs run (None: :class:`LocalExecutor`); the same files with any.

    Returns:
        A :class:`BatchSummary`; ``interrupted`` is set when a ``KeyboardInterrupt`` stopped the run (the work done
        so far is saved). Bad images fail their pairs only; a :class:`LightmatchError` is raised for what stops
        the whole batch (unwritable output, a store made with other settings).
    """
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="lightmatch-") as folder:
            summary = match_batch(image_dir, pairs, folder, extractor, matcher, options, on_event, executor)
        summary.features_path = summary.matches_path = None
        return summary
    start = time.perf_counter()
    options = options or BatchOptions()
    executor = executor or LocalExecutor()
    image_dir = Path(image_dir)
    run = MatchRun.prepare(image_dir, pairs, output_dir, extractor, matcher, options, executor)
    with ClosingRun(run.store, run.summary, start) as closing:
        todo = run.todo()
        needed = dict.fromkeys(n for pair in todo for n in pair)
        run.announce(todo, sum(not run.store.has_features(n) for n in needed), on_event)
        with closing.interruptible():
            executor.match(BatchRun(image_dir, extractor, matcher, options, run.store, run.summary, on_event), todo)
    return run.summary


@dataclass
class MatchRun:
    """The start of a match run that every executor shares: names normalised, self-pairs and repeats dropped, the
    store (not opened yet) and the summary with the counts known in advance."""

    kept: list[tuple[str, str]]
    dropped: list[tuple[str, str, str]]
    store: OutputStore
    summary: BatchSummary

    @classmethod
    def prepare(cls, image_dir: Path, pairs: Iterable[tuple[str, str]], output_dir: str | os.PathLike,
                extractor: Extractor, matcher: Matcher, options: BatchOptions, executor: Executor) -> "MatchRun":
        if not image_dir.is_dir():
            raise InputError(f"{image_dir}: no such image directory")
        kept, dropped = unique_pairs([(_normalised(a, image_dir), _normalised(b, image_dir)) for a, b in pairs])
        device = executor.device
        store = OutputStore(output_dir, store_attributes(extractor, device=device),
                            store_attributes(extractor, matcher, options.verify, device), options.overwrite)
        summary = BatchSummary("match", str(store.features_path), str(store.matches_path), extractor.name,
                               matcher.name, workers=options.workers, executor=executor.name)
        summary.pairs_total = len(kept) + len(dropped)
        summary.pairs_ignored = len(dropped)
        summary.images_total = len({n for pair in kept for n in pair})
        return cls(kept, dropped, store, summary)

    def todo(self) -> list[tuple[str, str]]:
        """The pairs the opened store does not hold yet (the others count as skipped)."""
        todo = [p for p in self.kept if not self.store.has_pair(*p)]
        self.summary.pairs_skipped = len(self.kept) - len(todo)
        return todo

    def announce(self, todo: list[tuple[str, str]], images_todo: int, on_event: Optional[EventCallback]) -> None:
        """Send the :class:`BatchStart`, then an event for each ignored and each skipped pair."""
        emit(on_event, BatchStart(self.summary.pairs_total, len(todo), self.summary.images_total, images_todo,
                                  self.store.removed))
        for a, b, reason in self.dropped:
            emit(on_event, PairEvent(a, b, "ignored", error=reason))
        todo_set = set(todo)
        for a, b in self.kept:
            if (a, b) not in todo_set:
                emit(on_event, PairEvent(a, b, "skipped"))


@dataclass
class ExtractRun:
    """The start of an extraction run that every executor shares: names normalised and deduplicated, the store (not
    opened yet) and the summary."""

    names: list[str]
    store: OutputStore
    summary: BatchSummary

    @classmethod
    def prepare(cls, image_dir: Path, names: Iterable[str], output_dir: str | os.PathLike, extractor: Extractor,
                options: BatchOptions, executor: Executor) -> "ExtractRun":
        if not image_dir.is_dir():
            raise InputError(f"{image_dir}: no such image directory")
        names = list(dict.fromkeys(_normalised(name, image_dir) for name in names))
        store = OutputStore(output_dir, store_attributes(extractor, device=executor.device), None, options.overwrite)
        summary = BatchSummary("extract", str(store.features_path), extractor=extractor.name,
                               workers=options.workers, executor=executor.name)
        summary.images_total = len(names)
        return cls(names, store, summary)

    def todo(self, on_event: Optional[EventCallback]) -> list[str]:
        """The images the opened store lacks; sends the :class:`BatchStart` and an event per image skipped."""
        todo = [n for n in self.names if not self.store.has_features(n)]
        self.summary.images_reused = len(self.names) - len(todo)
        emit(on_event, BatchStart(0, 0, len(self.names), len(todo), self.store.removed))
        for name in self.names:
            if self.store.has_features(name):
                emit(on_event, ImageEvent(name, "skipped"))
        return todo


class ClosingRun:
    """The frame that every executor's run keeps around its work::

        with ClosingRun(store, summary, start) as closing:  # opens the store
            ...                                  # plan, announce
            with closing.interruptible():
                ...                              # the work (BatchRun.match / .extract, or Ray workers)

    On the way out the store is finished (part files consolidated, tidied up) when the block completed, a Ctrl-C in
    the work included, and ``summary.elapsed_s`` is set from ``start``. Any other error, or a Ctrl-C outside the
    work, only releases the folder (the parts stay for the next run) and propagates.
    """

    def __init__(self, store: OutputStore, summary: BatchSummary, start: float) -> None:
        self.store = store
        self.summary = summary
        self.start = start

    def __enter__(self) -> "ClosingRun":
        self.store.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.store.close()
            return
        t = time.perf_counter()
        self.store.finish()
        self.summary.times["consolidate"] += time.perf_counter() - t
        self.summary.elapsed_s = time.perf_counter() - self.start

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A Ctrl-C in the block ends it and marks the run interrupted; the work done so far is saved."""
        try:
            yield
        except KeyboardInterrupt:
            self.summary.interrupted = True


class BatchRun:
    """The work of a batch, wherever it runs: decode (ahead, in threads), extract or read back, match (in groups of
    ``options.batch_pairs``), verify, plot and write through ``store`` (a :class:`Store`), counting into
    ``summary`` and reporting each image and pair to ``on_event``. The executor decides which pairs and images a run
    gets."""

    def __init__(self, image_dir: Path, extractor: Extractor, matcher: Optional[Matcher], options: BatchOptions,
                 store: Store, summary: BatchSummary, on_event: Optional[EventCallback]) -> None:
        self.image_dir = image_dir
        self.extractor = extractor
        self.matcher = matcher
        self.options = options
        self.store = store
        self.summary = summary
        self.on_event = on_event
        self.clock = _Clock(summary)

    def plan(self, pairs: Sequence[tuple[str, str]], has_features: Callable[[str], bool]
             ) -> tuple[list[Step], list[Job]]:
        """The steps and decode jobs of ``pairs`` (:func:`plan_pairs`); ``has_features``: the images to read back."""
        return plan_pairs(pairs, has_features, self.options.viz_dir is not None, self.options.cache_images)

    def match(self, steps: list[Step], jobs: list[Job]) -> None:
        """Run a plan: before each group of pairs, its images are loaded; after it, those the plan drops."""
        size = self.options.batch_pairs
        cache: dict[str, _Entry] = {}
        seen: set[str] = set()  # images extracted or read back once already in this run
        with self._loader(jobs, self.options.viz_dir is not None) as loader:
            for first in range(0, len(steps), size):
                group = steps[first:first + size]
                for step in group:
                    for load in step.loads:
                        self._load(load, loader, cache, seen)
                self._match_group(group, cache)
                for step in group:  # after the group: an image dropped by an early step may serve a later one
                    for name in step.evict:
                        cache.pop(name, None)

    def extract(self, names: list[str]) -> None:
        """Extract ``names``; the features of each go to the store at once."""
        jobs = [Job(name, True) for name in names]
        with self._loader(jobs, False) as loader:
            for i, job in enumerate(jobs):
                self._load(Load(job.name, i, True), loader, {}, set())
                self.clock.take()

    def _loader(self, jobs: list[Job], keep_viz: bool) -> PrefetchLoader:
        def load(job: Job) -> LoadedImage:
            return load_for_extractor(self.image_dir / job.name, job.name, self.extractor if job.extract else None,
                                      keep_viz)

        return PrefetchLoader(jobs, load, self.options.workers, self.options.prefetch)

    def _extract(self, loaded: LoadedImage) -> Features:
        start = time.perf_counter()
        try:
            feats = extract_loaded(self.extractor, loaded)
        except LightmatchError:
            raise
        except Exception as exc:  # e.g. out of memory on a huge image: that image fails, the batch goes on
            raise InputError(f"{loaded.name}: feature extraction failed ({error_text(exc)})") from exc
        feats = h5.canonical_features(feats)
        self.clock.add("extract", time.perf_counter() - start)
        return feats

    def _load(self, load: Load, loader: PrefetchLoader, cache: dict[str, _Entry], seen: set[str]) -> None:
        """Bring one image into the cache: extract it, or read its features back (and decode it for a plot)."""
        name, summary, clock = load.name, self.summary, self.clock
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
                feats = self._extract(loaded)
                t = time.perf_counter()
                self.store.commit(features={name: feats})
                clock.add("write", time.perf_counter() - t)
                summary.images_extracted += 1
                emit(self.on_event, ImageEvent(name, "extracted", len(feats), timings=dict(clock.item)))
            else:
                t = time.perf_counter()
                try:
                    feats = self.store.read_features(name)
                except (KeyError, OSError, ValueError) as exc:
                    raise InputError(f"{name}: cannot read its stored features ({exc}); rerun with --overwrite"
                                     ) from exc
                clock.add("read", time.perf_counter() - t)
                if name not in seen:  # features from an earlier run (not ones this run dropped and read again)
                    summary.images_reused += 1
            seen.add(name)
        except InputError as exc:
            fail_image(name, error_text(exc), summary, self.on_event)
            return
        cache[name] = _Entry(feats, loaded.viz if loaded is not None else None,
                             loaded.viz_scale if loaded is not None else 1.0)

    def _match_group(self, steps: list[Step], cache: dict[str, _Entry]) -> None:
        """Match the pairs of ``steps`` (together when there are several: :meth:`Matcher.match_many`), then verify,
        plot and store each. A pair whose image failed fails; when a batched call fails, its pairs are matched one
        by one, so that one bad pair fails alone."""
        failed_images = self.summary.failed_images
        ready = []
        for step in steps:
            bad = [n for n in (step.name0, step.name1) if n in failed_images]
            if bad:
                fail_pair(step.name0, step.name1, "; ".join(f"image {n}: {failed_images[n]}" for n in bad),
                          self.summary, self.on_event, self.clock.take())
            else:
                ready.append(step)
        found: list = [None] * len(ready)
        if len(ready) > 1:
            t = time.perf_counter()
            try:
                found = self.matcher.match_many([(cache[s.name0].features, cache[s.name1].features) for s in ready])
            except (ConfigError, OutputError):
                raise
            except Exception:  # noqa: BLE001 (matched one by one below, where each pair reports its own error)
                found = [None] * len(ready)
            self.clock.add("match", time.perf_counter() - t)
        for step, matches in zip(ready, found):
            self._finish_pair(step, matches, cache)

    def _finish_pair(self, step: Step, matches: Optional[Matches], cache: dict[str, _Entry]) -> None:
        """Match one pair (unless ``matches`` came from a batched call), verify, plot, store and report it."""
        a, b = step.name0, step.name1
        e0, e1 = cache[a], cache[b]
        options, summary, clock, matcher = self.options, self.summary, self.clock, self.matcher
        warnings = [f"{n}: no keypoints found (blank or featureless image)"
                    for n, e in ((a, e0), (b, e1)) if len(e.features) == 0]
        try:
            if matches is None:
                t = time.perf_counter()
                matches = matcher.match(e0.features, e1.features)
                clock.add("match", time.perf_counter() - t)
            m = matches.cpu()
            inliers = None
            if options.verify is not None:
                t = time.perf_counter()
                inliers = options.verify.inliers(e0.features, e1.features, m)
                clock.add("verify", time.perf_counter() - t)
            if options.viz_dir is not None:
                t = time.perf_counter()
                self._plot(a, b, e0, e1, m, inliers, options.viz_dir / viz_filename(a, b))
                clock.add("viz", time.perf_counter() - t)
        except (ConfigError, OutputError):
            raise
        except Exception as exc:  # one pair failing (e.g. out of memory) does not stop the batch
            fail_pair(a, b, error_text(exc), summary, self.on_event, clock.take())
            return
        t = time.perf_counter()
        self.store.commit(matches={(a, b): (m, inliers)})
        clock.add("write", time.perf_counter() - t)
        summary.pairs_matched += 1
        if inliers is not None:
            summary.pairs_verified += 1
            summary.inliers += int(inliers.sum())
        compared0, compared1, _ = chosen_turn(e0.features, e1.features, m)  # a rotation search's: one turn each
        emit(self.on_event, PairEvent(a, b, "ok", len(compared0), len(compared1), m.num_matches,
                                      None if inliers is None else int(inliers.sum()), m.stop_layer or None,
                                      matcher.num_layers, rotation_degrees=chosen_degrees(m),
                                      timings=clock.take(), warnings=warnings))

    def _plot(self, a: str, b: str, e0: _Entry, e1: _Entry, m: Matches, inliers: Optional[np.ndarray],
              path: Path) -> None:
        if e0.viz is None or e1.viz is None:
            return
        text = [f"{self.extractor.name} + {self.matcher.name}",
                f"keypoints {len(e0.features)} / {len(e1.features)}",
                f"matches {m.num_matches}" + (f", inliers {int(inliers.sum())}" if inliers is not None else "")]
        correct = inliers[m.pairs()[:, 0]] if inliers is not None else None
        plot_pair(e0.viz, e1.viz, e0.viz_scale, e1.viz_scale, e0.features, e1.features, m, path, text,
                  correct=correct, title=f"{a}  {b}", max_lines=self.options.viz_max_matches,
                  labels=("inlier", "outlier"))


def fail_image(name: str, error: str, summary: BatchSummary, on_event: Optional[EventCallback]) -> None:
    """Count a failed image in ``summary`` and report it (its pairs fail when they come)."""
    summary.images_failed += 1
    summary.failed_images[name] = error
    emit(on_event, ImageEvent(name, "failed", error=error))


def fail_pair(name0: str, name1: str, error: str, summary: BatchSummary, on_event: Optional[EventCallback],
              timings: Optional[dict[str, float]] = None) -> None:
    """Count a failed pair in ``summary`` and report it."""
    summary.pairs_failed += 1
    summary.failed_pairs.append((name0, name1, error))
    emit(on_event, PairEvent(name0, name1, "failed", error=error, timings=timings or {}))


def extract_batch(
    image_dir: str | os.PathLike,
    names: Iterable[str],
    output_dir: str | os.PathLike,
    extractor: Extractor,
    options: Optional[BatchOptions] = None,
    on_event: Optional[EventCallback] = None,
    executor: Optional[Executor] = None,
) -> BatchSummary:
    """Extract the features of ``names`` (relative to ``image_dir``) into ``output_dir/features.h5``.

    Images already in the store are skipped (``options.overwrite`` discards the store, and ``matches.h5`` with it,
    since its matches index the old keypoints); ``options.workers`` and ``options.prefetch`` set the decoding. Same
    executors, crash safety and events as :func:`match_batch`.
    """
    start = time.perf_counter()
    options = options or BatchOptions()
    executor = executor or LocalExecutor()
    image_dir = Path(image_dir)
    run = ExtractRun.prepare(image_dir, names, output_dir, extractor, options, executor)
    with ClosingRun(run.store, run.summary, start) as closing:
        todo = run.todo(on_event)
        with closing.interruptible():
            executor.extract(BatchRun(image_dir, extractor, None, options, run.store, run.summary, on_event), todo)
    return run.summary
