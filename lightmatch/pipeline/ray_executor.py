"""Batch extraction and matching on Ray: the :class:`RayExecutor` runs the work of :mod:`.batch` (the same
:class:`~.batch.BatchRun`, options, events and files) over worker actors on one machine (an embedded Ray instance)
or a cluster (``address``).

Data flow of ``match_batch(..., executor=RayExecutor(...))``::

    driver: OutputStore.open (lock, settings check, consolidates a killed run's parts) ─► todo pairs (as locally)
      ─► extraction: the todo images lacking features, in chunks, spread over the actors (each holds one loaded
         extractor and matcher) ─► each actor writes one part file per image (PartWriter: the store's rules)
      ─► the driver consolidates the feature parts into features.h5
      ─► matching: the todo pairs in chunks of neighbouring pairs (in the given order, as the local planner
         goes), so an actor reads an image's features from features.h5 once per chunk ─► one part file per pair
      ─► the driver consolidates into matches.h5 (OutputStore.finish)

Only the driver writes ``features.h5`` and ``matches.h5``. The image folder and the output folder must be at the
same path on every node (a shared file system on a cluster); only events and timings travel through Ray.

**Faults.** Ray restarts a killed actor (``max_restarts``) and retries the chunk it held (``max_task_retries``);
a chunk whose actor is gone for good goes to another actor (up to :data:`ATTEMPTS` tries, then its items fail).
Work a dead actor finished is in part files already: redoing it writes the same values again, and consolidation
keeps one copy per image and pair. A killed driver takes its actors with it; rerunning the command resumes from
the parts as a local run does. A bad image fails its pairs only, as locally.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from ..errors import ConfigError, InputError, LightmatchError
from ..io.store import PartWriter
from .batch import BatchOptions, BatchRun, error_text, fail_pair
from .events import BatchSummary, EventCallback, ImageEvent, emit
from .match import store_attributes
from .spec import ModelSpec

ATTEMPTS = 3  # tries of one chunk by the driver (each try is itself retried by Ray on a restarted actor)
MAX_CHUNK_PAIRS = 32
MAX_CHUNK_IMAGES = 8
EMBEDDED_OBJECT_STORE = 128 * 1024 ** 2  # bytes; only events and timings go through it
MISSING_RAY = '--executor ray needs Ray, an optional extra: pip install "lightmatch[ray]"'


@dataclass
class RayOptions:
    """Where and how wide to run.

    Attributes:
        address: a running cluster (``ray start --head`` prints it; ``auto`` finds a local one); None starts an
            embedded Ray instance on this machine (127.0.0.1), stopped at the end.
        workers: worker actors (None: one per CPU of the cluster, or per ``gpus`` GPUs when ``gpus > 0``).
        gpus: GPUs per worker (fractions share a GPU); 0 runs on CPUs.
        restarts: restarts of a killed worker (and retries of its unfinished chunk) before the driver moves the
            chunk to another worker.
    """

    address: Optional[str] = None
    workers: Optional[int] = None
    gpus: float = 0.0
    restarts: int = 3

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.gpus < 0:
            raise ConfigError(f"--worker-gpus must be >= 0, got {self.gpus}")


def check_resources(options: RayOptions, gpus_here: Optional[int] = None) -> None:
    """Refuse workers that could never start (Ray would wait for them forever): GPUs per worker on a machine or
    cluster without that many, or more workers than its GPUs or CPUs hold; on this machine, also more than four
    workers per CPU. ``gpus_here``: the GPUs of an embedded instance (default: torch's count); a cluster is checked
    once connected (:class:`_Pool`)."""
    if options.address is not None:
        return
    cpus = os.cpu_count() or 1
    if options.workers is not None and options.workers > 4 * cpus:
        raise ConfigError(f"--ray-workers {options.workers}: this machine has {cpus} CPUs; at most {4 * cpus} "
                          "workers (each holds a loaded model) run on one machine")
    if not options.gpus:
        return
    if gpus_here is None:
        import torch

        gpus_here = torch.cuda.device_count()
    _check_fits(options, {"GPU": gpus_here}, "this machine")


def _check_fits(options: RayOptions, resources: dict, where: str) -> None:
    gpus = float(resources.get("GPU", 0))
    if options.gpus and options.gpus > gpus:
        raise ConfigError(f"--worker-gpus {options.gpus:g}: {where} has {gpus:g} GPU(s) Ray can use; give "
                          f"--worker-gpus at most {gpus:g} (0: run on CPUs)")
    if options.gpus and options.workers is not None and options.workers * options.gpus > gpus:
        raise ConfigError(f"--ray-workers {options.workers} with --worker-gpus {options.gpus:g} need "
                          f"{options.workers * options.gpus:g} GPUs; {where} has {gpus:g}")
    cpus = resources.get("CPU")
    if not options.gpus and options.workers is not None and cpus is not None and options.workers > cpus:
        raise ConfigError(f"--ray-workers {options.workers}: {where} has {cpus:g} CPUs (one per worker)")


def import_ray(embedded: bool = False):
    """The ``ray`` module, or :class:`ConfigError` naming the extra that installs it.

    ``embedded``: Ray will start on this machine only; when imported here, it then listens on 127.0.0.1 only (by
    default an embedded instance listens on every interface)."""
    if embedded and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    return ray


# ----------------------------------------------------------------------------------------------- worker ---

@dataclass
class _Config:
    """What every worker needs; sent once when the actors start."""

    spec: ModelSpec
    image_dir: Path
    output_dir: Path
    options: BatchOptions
    matching: bool


@dataclass
class _Result:
    """A chunk done by a worker: its events in order, its counts and times, and how long it took."""

    events: list
    summary: BatchSummary
    busy_s: float
    pid: int = field(default_factory=os.getpid)


class Worker:
    """One Ray actor: one loaded extractor and matcher, writing part files of the driver's output folder."""

    def __init__(self, index: int, config: _Config) -> None:
        self.config = config
        self.extractor, self.matcher = config.spec.load()
        match_attrs = (store_attributes(self.extractor, self.matcher, config.options.verify) if config.matching
                       else None)
        self.writer = PartWriter(config.output_dir, store_attributes(self.extractor), match_attrs, f"w{index}")

    def _run(self, command: str, events: list) -> BatchRun:
        c = self.config
        return BatchRun(c.image_dir, self.extractor, self.matcher, c.options, self.writer, BatchSummary(command, ""),
                        events.append)

    def extract(self, names: list[str]) -> _Result:
        """Extract ``names``; one part file per image."""
        start = time.perf_counter()
        events: list = []
        run = self._run("extract", events)
        run.extract(names)
        return _Result(events, run.summary, time.perf_counter() - start)

    def match(self, pairs: list[tuple[str, str]], failed_images: dict[str, str]) -> _Result:
        """Match ``pairs`` with features read from ``features.h5``; pairs of ``failed_images`` fail as locally."""
        start = time.perf_counter()
        events: list = []
        run = self._run("match", events)
        run.summary.failed_images = dict(failed_images)
        try:
            run.match(*run.plan(pairs, lambda name: True))
        finally:
            self.writer.close()  # features.h5 is replaced between runs: never keep it open across chunks
        return _Result(events, run.summary, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- driver ---

class _Pool:
    """The actors of one run and the chunks they work on, with retries on other actors."""

    def __init__(self, ray, options: RayOptions, config: _Config) -> None:
        self.ray = ray
        count = options.workers
        resources = ray.cluster_resources()
        if options.address is not None:
            _check_fits(options, resources, f"the Ray cluster at {options.address}")
        if count is None:
            count = int(resources.get("GPU", 0) / options.gpus) if options.gpus else int(resources.get("CPU", 1))
        actor = ray.remote(num_cpus=1, num_gpus=options.gpus, max_restarts=options.restarts,
                           max_task_retries=options.restarts)(Worker)
        self.actors = [actor.remote(i, config) for i in range(max(1, count))]
        self.alive = list(range(len(self.actors)))
        self.stats: dict[int, dict[str, float]] = {i: {"pairs": 0, "images": 0, "busy_s": 0.0}
                                                  for i in range(len(self.actors))}

    def run(self, method: str, chunks: Sequence[tuple], on_done: Callable[[int, _Result], None],
            on_failed: Callable[[int, str], None]) -> None:
        """Call ``method(*chunk)`` on the actors for every chunk (at most two in flight per actor), calling
        ``on_done(index, result)`` as each completes, or ``on_failed(index, error)`` after :data:`ATTEMPTS`."""
        ray = self.ray
        queue = list(range(len(chunks)))
        attempts = [0] * len(chunks)
        flight: dict[Any, tuple[int, int]] = {}  # object ref -> (chunk, actor)
        while queue or flight:
            for a in list(self.alive):
                for _ in range(2 - sum(1 for _, actor in flight.values() if actor == a)):
                    if queue:
                        i = queue.pop(0)
                        attempts[i] += 1
                        flight[getattr(self.actors[a], method).remote(*chunks[i])] = (i, a)
            if not flight:
                break
            ready, _ = ray.wait(list(flight), num_returns=1)
            i, a = flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # the method raised: a real error, not a lost worker
                if isinstance(exc.cause, LightmatchError) and not isinstance(exc.cause, InputError):
                    raise exc.cause from None
                on_failed(i, error_text(exc.cause or exc))
                continue
            except ray.exceptions.RayError as exc:  # the actor died for good (restarts used up) or is unreachable
                if a in self.alive:
                    self.alive.remove(a)
                if attempts[i] < ATTEMPTS and self.alive:
                    queue.insert(0, i)
                else:
                    on_failed(i, f"Ray worker lost ({type(exc).__name__})")
                continue
            stats = self.stats[a]
            stats["busy_s"] += result.busy_s
            stats["pairs"] += result.summary.pairs_matched
            stats["images"] += result.summary.images_extracted
            on_done(i, result)
        if queue:
            for i in queue:
                on_failed(i, "no Ray worker left")

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)

    def per_worker(self) -> dict[str, dict[str, float]]:
        return {f"worker-{i}": {k: round(v, 3) for k, v in s.items()} for i, s in self.stats.items()}


def _chunks(items: list, workers: int, largest: int, multiple: int = 1) -> list[list]:
    """``items`` in consecutive chunks: about four per worker, at most ``largest`` items each, rounded up to a
    ``multiple`` (so that a chunk holds whole groups of ``--batch-pairs``, the groups of a local run)."""
    if not items:
        return []
    size = max(1, min(largest, math.ceil(len(items) / (4 * workers))))
    size = math.ceil(size / multiple) * multiple
    return [items[i:i + size] for i in range(0, len(items), size)]


def _merge(summary: BatchSummary, part: BatchSummary) -> None:
    """Add a worker's counts and times to the run's summary."""
    summary.pairs_matched += part.pairs_matched
    summary.pairs_failed += part.pairs_failed
    summary.failed_pairs += part.failed_pairs
    summary.images_extracted += part.images_extracted
    for name, error in part.failed_images.items():
        if name not in summary.failed_images:
            summary.failed_images[name] = error
            summary.images_failed += 1
    for key, seconds in part.times.items():
        summary.times[key] = summary.times.get(key, 0.0) + seconds


def _forward(summary: BatchSummary, result: _Result, on_event: Optional[EventCallback]) -> None:
    """Merge a chunk's result and send its events (an image failing in several chunks is reported once)."""
    known = set(summary.failed_images)
    _merge(summary, result.summary)
    for event in result.events:
        if not (isinstance(event, ImageEvent) and event.status == "failed" and event.name in known):
            emit(on_event, event)


_NOWHERE = "http://127.0.0.1:9"  # a proxy that is a closed local port: HTTP through it fails at once, locally
_LOCAL = "127.0.0.1,localhost,::1"
EMBEDDED_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reports
    # Ray's dashboard process asks the cloud metadata servers (169.254.169.254, metadata.google.internal) which
    # cloud it runs on whatever the setting above (Ray 2.60, UsageStatsHead.run); its HTTP goes to a proxy that is
    # a closed local port, so nothing is looked up or sent beyond this machine. Local traffic bypasses it.
    **{name: _NOWHERE for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")},
    **{name: _LOCAL for name in ("no_proxy", "NO_PROXY")},
}


def _token_file(folder: str) -> str:
    """A fresh authentication token for the embedded instance, in its own folder (Ray would otherwise create
    ``~/.ray/auth_token``); readable by this user only."""
    path = os.path.join(folder, "auth_token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16))
    return path


def _forget_token(ray) -> None:
    """Make Ray read the token file anew (it caches the token of an earlier session in this process)."""
    try:
        ray._raylet.AuthenticationTokenLoader.instance().reset_cache()
    except AttributeError:  # a Ray without token authentication
        pass


class _Session:
    """Ray for one run: connects to ``address`` or starts an embedded instance, and stops what it started.

    An embedded instance talks to nothing beyond this machine and writes nothing outside the run's folders: usage
    statistics off (:data:`EMBEDDED_ENV`, inherited by its processes), and its session files (sockets, logs, the
    authentication token its processes share) in a temporary folder of its own, removed when it stops (instead of
    ``/tmp/ray`` and ``~/.ray``).

    Ray prints its own notices (a worker died, a task is retried) on ``sys.stdout``; while the session lasts they
    go to ``sys.stderr``, so that a caller's stdout (e.g. JSON lines) stays clean."""

    def __init__(self, options: RayOptions) -> None:
        self.ray = import_ray(embedded=options.address is None)
        self.options = options
        self.started = False
        self.redirect = contextlib.redirect_stdout(sys.stderr)
        self.temp_dir: Optional[str] = None
        self.saved_env: dict[str, Optional[str]] = {}

    def __enter__(self):
        ray = self.ray
        if ray.is_initialized():  # the caller's own Ray session: use it, leave it running
            return ray
        import logging

        self.redirect.__enter__()
        try:
            if self.options.address is None:
                workers = self.options.workers or os.cpu_count() or 1
                # short: Ray's unix socket paths inside it must stay under ~107 characters
                self.temp_dir = tempfile.mkdtemp(prefix="lm-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
                env = {**EMBEDDED_ENV, "RAY_AUTH_TOKEN_PATH": _token_file(self.temp_dir)}
                self.saved_env = {key: os.environ.get(key) for key in (*env, "RAY_AUTH_MODE")}  # ray.init sets it
                os.environ.update(env)
                _forget_token(ray)
                ray.init(address="local", num_cpus=max(workers, os.cpu_count() or 1),
                         object_store_memory=EMBEDDED_OBJECT_STORE, include_dashboard=False,
                         _node_ip_address="127.0.0.1", _temp_dir=self.temp_dir, logging_level=logging.ERROR,
                         log_to_driver=False)
            else:
                _check_reachable(self.options.address)
                try:
                    ray.init(address=self.options.address, logging_level=logging.ERROR, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError(f"--ray-address {self.options.address}: cannot connect to a Ray cluster "
                                      f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        except BaseException:
            self._restore()
            self.redirect.__exit__(None, None, None)
            raise
        self.started = True
        return ray

    def __exit__(self, *exc) -> None:
        if not self.started:
            return
        try:
            self.ray.shutdown()
        finally:
            self._restore()
            self.redirect.__exit__(*exc)

    def _restore(self) -> None:
        """Remove the embedded instance's session folder and restore the environment it was started with."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}


def _check_reachable(address: str) -> None:
    """A ``host:port`` address that nothing listens on fails at once (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                          "one with `ray start --head`") from None


class RayExecutor:
    """Runs the jobs of a batch (:func:`~lightmatch.pipeline.batch.match_batch`,
    :func:`~lightmatch.pipeline.batch.extract_batch`) on Ray worker actors, each running the same
    :class:`~lightmatch.pipeline.batch.BatchRun` as a local run on its share: the same files, and the same events
    (pair events come in the order chunks complete).

    Each worker builds its extractor and matcher from ``spec`` (:meth:`~lightmatch.pipeline.spec.ModelSpec.load`).
    ``options.workers``, ``prefetch`` and ``cache_images`` hold per Ray worker; chunks of pairs hold whole groups
    of ``options.batch_pairs``, so the groups matched together are those of a local run. The summary's
    ``per_worker`` holds each worker's pairs, images and busy seconds.
    """

    name = "ray"

    def __init__(self, spec: ModelSpec, options: RayOptions) -> None:
        import_ray(embedded=options.address is None)
        self.spec = spec
        self.options = options
        # the workers run on CUDA when given GPUs: the settings the stores are checked against (device, precision
        # resolved there) are theirs, not those of the driver's models
        self.device = torch.device("cuda") if options.gpus else None

    def extract(self, work: BatchRun, names: list[str]) -> None:
        """Extract ``names`` over the workers (one part file per image)."""
        if names:
            with self._pool(work, matching=False) as pool:
                _extract_all(pool, names, work.summary, work.on_event)

    def match(self, work: BatchRun, todo: list[tuple[str, str]]) -> None:
        """Extract the images of ``todo`` the store lacks, consolidate them into ``features.h5`` (which the
        workers read), then match ``todo`` in chunks of neighbouring pairs (one part file per pair)."""
        store, summary = work.store, work.summary
        needed = list(dict.fromkeys(n for pair in todo for n in pair))
        missing = [n for n in needed if not store.has_features(n)]
        summary.images_reused = len(needed) - len(missing)
        if not todo:
            return
        with self._pool(work, matching=True) as pool:
            _extract_all(pool, missing, summary, work.on_event)
            t = time.perf_counter()
            store.consolidate()
            summary.times["consolidate"] += time.perf_counter() - t
            chunks = [(chunk, {n: summary.failed_images[n] for pair in chunk for n in pair
                               if n in summary.failed_images})
                      for chunk in _chunks(todo, len(pool.actors), MAX_CHUNK_PAIRS, work.options.batch_pairs)]

            def failed(i: int, error: str) -> None:
                for a, b in chunks[i][0]:
                    fail_pair(a, b, error, summary, work.on_event)

            pool.run("match", chunks, lambda i, result: _forward(summary, result, work.on_event), failed)

    @contextlib.contextmanager
    def _pool(self, work: BatchRun, matching: bool) -> Iterator[_Pool]:
        """The run's worker actors (in a Ray session), stopped at the end; their statistics go into the summary."""
        config = _Config(self.spec, work.image_dir.resolve(), work.store.folder.resolve(), work.options,
                         matching)
        with _Session(self.options) as ray:
            pool = _Pool(ray, self.options, config)
            try:
                yield pool
            finally:
                work.summary.per_worker = pool.per_worker()
                pool.close()


def _extract_all(pool: _Pool, names: list[str], summary: BatchSummary, on_event: Optional[EventCallback]) -> None:
    """Extract ``names`` over the pool's workers (one part file per image)."""
    chunks = [(chunk,) for chunk in _chunks(names, len(pool.actors), MAX_CHUNK_IMAGES)]

    def failed(i: int, error: str) -> None:
        for name in chunks[i][0]:
            summary.images_failed += 1
            summary.failed_images[name] = error
            emit(on_event, ImageEvent(name, "failed", error=error))

    pool.run("extract", chunks, lambda i, result: _forward(summary, result, on_event), failed)
