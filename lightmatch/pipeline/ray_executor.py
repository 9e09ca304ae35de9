"""Batch extraction and matching on Ray: the :class:`RayExecutor` runs the work of :mod:`.batch` (the same
:class:`~.batch.BatchRun`, options, events and files) over worker actors on one machine (an embedded Ray instance)
or a cluster (``address``).

Data flow of ``match_batch(..., executor=RayExecutor(...))``::

    driver: OutputStore.open (lock, settings check, consolidates a killed run's parts) ─► todo pairs (as locally)
      ─► extraction: the todo images lacking features, in chunks spread over the actors (each holds one loaded
         extractor and matcher); the driver reads each chunk's image files and sends their bytes
      ─► the actor decodes them from a temporary folder of its own, extracts, and returns the features
      ─► the driver commits them through its OutputStore (part files of chunks of items, as locally)
      ─► matching: the todo pairs in chunks of neighbouring pairs (in the given order, as the local planner goes),
         each sent with the features of its images (read back from the driver's store); the actor returns the
         matches (and, with --viz-dir, the plots' PNG bytes) ─► committed by the driver
      ─► the driver consolidates into features.h5 / matches.h5 (OutputStore.finish)

**No shared file system.** Everything a worker needs travels through Ray's object store, and everything it
produces comes back through it: only the driver reads the image folder and writes the output folder (and
``--viz-dir``). Workers may run on machines that see neither; an image the driver cannot read fails with the
error a local run gives, naming the driver's path. Per chunk in flight this moves the image files (extraction)
or the features of the chunk's images (matching), at most two chunks per actor.

**Faults.** Ray restarts a killed actor (``max_restarts``), on another node when its node is lost, and retries
the chunk it held (``max_task_retries``); a chunk whose actor is gone for good, or whose result was lost with its
node, goes to another actor (up to :data:`ATTEMPTS` tries, then its items fail). Results are written by the
driver only, once per chunk, so a chunk redone writes nothing twice. A killed driver takes its actors with it;
rerunning the command resumes from the part files as a local run does. A bad image fails its pairs only, as
locally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
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
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from ..errors import ConfigError, InputError, LightmatchError
from ..io.images import image_bytes
from ..types import Features, Matches
from .batch import BatchOptions, BatchRun, error_text, fail_image, fail_pair
from .events import BatchSummary, EventCallback, ImageEvent, emit
from .spec import ModelSpec

ATTEMPTS = 3  # tries of one chunk by the driver (each try is itself retried by Ray on a restarted actor)
MAX_CHUNK_PAIRS = 32
MAX_CHUNK_IMAGES = 8
EMBEDDED_OBJECT_STORE = 256 * 1024 ** 2  # bytes; image files, features and matches of the chunks in flight
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
    """What every worker needs; sent once when the actors start. ``image_dir``: the image folder as the driver
    names it (only to name an image in an error message: workers never read it)."""

    spec: ModelSpec
    image_dir: str
    options: BatchOptions


@dataclass
class _Result:
    """A chunk done by a worker: its events in order, its counts and times, how long it took, and its results for
    the driver to store: features (name -> Features), matches ((name0, name1) -> (Matches, inliers)) and match
    plots (file name in ``--viz-dir`` -> PNG bytes)."""

    events: list
    summary: BatchSummary
    busy_s: float
    features: dict[str, Features] = field(default_factory=dict)
    matches: dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)


class _Collector:
    """The store of a worker's :class:`BatchRun` (a :class:`~.batch.Store`): features are those the driver sent,
    results are kept for the driver, which writes them through its :class:`~lightmatch.io.store.OutputStore`."""

    def __init__(self, features: dict[str, Features]) -> None:
        self.given = features
        self.features: dict[str, Features] = {}
        self.matches: dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]] = {}

    def read_features(self, name: str) -> Features:
        return self.given[name]

    def commit(self, features: Optional[dict[str, Features]] = None,
               matches: Optional[dict[tuple[str, str], tuple[Matches, Optional[np.ndarray]]]] = None) -> None:
        self.features.update({name: f.to("cpu") for name, f in (features or {}).items()})
        self.matches.update(matches or {})


class Worker:
    """One Ray actor: one loaded extractor and matcher. It touches no file of the driver's: images come as their
    bytes, features to match with come from the driver, and results go back to it (:class:`_Result`); the images
    are decoded from a temporary folder of the worker's own, removed after each chunk."""

    def __init__(self, config: _Config) -> None:
        self.config = config
        self.extractor, self.matcher = config.spec.load()

    def extract(self, images: dict[str, bytes]) -> _Result:
        """Extract the images given as ``name -> file bytes``."""
        return self._chunk("extract", images, {}, {}, lambda run: run.extract(list(images)))

    def match(self, pairs: list[tuple[str, str]], features: dict[str, Features], images: dict[str, bytes],
              failed_images: dict[str, str]) -> _Result:
        """Match ``pairs`` with the ``features`` of their images (and plot them with ``images``' bytes under
        ``--viz-dir``); pairs of ``failed_images`` fail as locally."""
        return self._chunk("match", images, features, failed_images,
                           lambda run: run.match(*run.plan(pairs, lambda name: True)))

    def _chunk(self, command: str, images: dict[str, bytes], features: dict[str, Features],
               failed_images: dict[str, str], work: Callable[[BatchRun], None]) -> _Result:
        start = time.perf_counter()
        events: list = []
        with tempfile.TemporaryDirectory(prefix="lm-ray-w-") as folder:
            root = Path(folder) / "images"
            for name, data in images.items():
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            options = self.config.options
            viz = options.viz_dir is not None
            if viz:
                options = dataclasses.replace(options, viz_dir=Path(folder) / "viz")
            store = _Collector(features)
            run = BatchRun(root, self.extractor, self.matcher, options, store, BatchSummary(command, ""),
                           events.append)
            run.summary.failed_images = dict(failed_images)
            work(run)
            plots = {p.name: p.read_bytes() for p in options.viz_dir.glob("*.png")} if viz else {}
        result = _Result(events, run.summary, time.perf_counter() - start, store.features, store.matches, plots)
        _name_driver_paths(result, root, self.config.image_dir, images)
        return result


def _name_driver_paths(result: _Result, root: Path, image_dir: str, names: Iterable[str]) -> None:
    """Errors of ``result`` name each image by the driver's path, as a local run does, not by the worker's
    temporary copy under ``root``."""
    copies = [(str(root / name), str(Path(image_dir) / name)) for name in names]

    def fix(text: Optional[str]) -> Optional[str]:
        for copy, original in copies:
            text = text.replace(copy, original) if text else text
        return text

    for event in result.events:
        event.error = fix(event.error)
    summary = result.summary
    summary.failed_images = {name: fix(error) for name, error in summary.failed_images.items()}
    summary.failed_pairs = [(a, b, fix(error)) for a, b, error in summary.failed_pairs]


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
        # SPREAD: the workers go to as many nodes as there are, so that losing a node loses few of them
        actor = ray.remote(num_cpus=1, num_gpus=options.gpus, max_restarts=options.restarts,
                           max_task_retries=options.restarts, scheduling_strategy="SPREAD")(Worker)
        self.actors = [actor.remote(config) for _ in range(max(1, count))]
        self.alive = list(range(len(self.actors)))
        self.stats: dict[int, dict[str, float]] = {i: {"pairs": 0, "images": 0, "busy_s": 0.0}
                                                  for i in range(len(self.actors))}

    def run(self, method: str, count: int, arguments: Callable[[int], tuple],
            on_done: Callable[[int, _Result], None], on_failed: Callable[[int, str], None]) -> None:
        """Call ``method(*arguments(i))`` on the actors for chunks ``i`` in ``range(count)`` (at most two in flight
        per actor; the arguments are made as a chunk is sent, so that the driver holds the data of the chunks in
        flight only), calling ``on_done(i, result)`` as each completes, or ``on_failed(i, error)`` after
        :data:`ATTEMPTS`."""
        ray = self.ray
        queue = list(range(count))
        attempts = [0] * count
        flight: dict[Any, tuple[int, int]] = {}  # object ref -> (chunk, actor)
        while queue or flight:
            for a in list(self.alive):
                for _ in range(2 - sum(1 for _, actor in flight.values() if actor == a)):
                    if queue:
                        i = queue.pop(0)
                        attempts[i] += 1
                        flight[getattr(self.actors[a], method).remote(*arguments(i))] = (i, a)
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
                cause = _start_error(ray, exc)
                if cause is not None:  # every worker builds the same models: none would start
                    raise ConfigError(f"a Ray worker could not load its models: {error_text(cause)}") from None
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


def _start_error(ray, exc: BaseException) -> Optional[BaseException]:
    """What the worker's ``__init__`` (loading its models) raised, when ``exc`` says its actor died of that; e.g. a
    weights file that exists on the driver's machine only."""
    if not (isinstance(exc, ray.exceptions.ActorDiedError) and exc.actor_init_failed):
        return None
    return next((a.cause for a in exc.args if isinstance(a, ray.exceptions.RayTaskError) and a.cause), exc)


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

    Ray prints its own notices (a worker died, a task is retried, with tracebacks) on ``sys.stdout``; while the
    session lasts they are dropped, so that a caller's stdout (e.g. JSON lines) stays clean and an error stays one
    line: what they announce reaches the caller as events, the summary or a :class:`LightmatchError`, and a
    cluster keeps them in its own session logs."""

    def __init__(self, options: RayOptions) -> None:
        self.ray = import_ray(embedded=options.address is None)
        self.options = options
        self.started = False
        self.redirect = contextlib.redirect_stdout(io.StringIO())
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
        """Extract ``names`` over the workers."""
        if names:
            with self._pool(work) as pool:
                _extract_all(pool, work, names)

    def match(self, work: BatchRun, todo: list[tuple[str, str]]) -> None:
        """Extract the images of ``todo`` the store lacks, then match ``todo`` in chunks of neighbouring pairs, each
        sent with the features of its images (read from the store here)."""
        store, summary = work.store, work.summary
        needed = list(dict.fromkeys(n for pair in todo for n in pair))
        missing = [n for n in needed if not store.has_features(n)]
        summary.images_reused = len(needed) - len(missing)
        if not todo:
            return
        with self._pool(work) as pool:
            _extract_all(pool, work, missing)
            chunks = _chunks(todo, len(pool.actors), MAX_CHUNK_PAIRS, work.options.batch_pairs)

            def arguments(i: int) -> tuple:
                names = list(dict.fromkeys(n for pair in chunks[i] for n in pair))
                images = _read_images(work, names) if work.options.viz_dir is not None else {}
                return (chunks[i], {n: store.read_features(n) for n in names if n not in summary.failed_images},
                        images, {n: summary.failed_images[n] for n in names if n in summary.failed_images})

            def failed(i: int, error: str) -> None:
                for a, b in chunks[i]:
                    fail_pair(a, b, error, summary, work.on_event)

            pool.run("match", len(chunks), arguments, lambda i, result: _store_result(work, result), failed)

    @contextlib.contextmanager
    def _pool(self, work: BatchRun) -> Iterator[_Pool]:
        """The run's worker actors (in a Ray session), stopped at the end; their statistics go into the summary."""
        with _Session(self.options) as ray:
            pool = _Pool(ray, self.options, _Config(self.spec, str(work.image_dir), work.options))
            try:
                yield pool
            finally:
                work.summary.per_worker = pool.per_worker()
                pool.close()


def _read_images(work: BatchRun, names: list[str]) -> dict[str, bytes]:
    """The file bytes of ``names``, read here on the driver (workers need no access to the image folder); an image
    that cannot be read fails here, with the error a local run gives."""
    images = {}
    for name in names:
        if name not in work.summary.failed_images:
            try:
                images[name] = image_bytes(work.image_dir / name)
            except InputError as exc:
                fail_image(name, error_text(exc), work.summary, work.on_event)
    return images


def _store_result(work: BatchRun, result: _Result) -> None:
    """Write a chunk's results through the driver's store, one item per commit as a local run does (so the part
    files hold chunks of items as locally), and its plots into ``--viz-dir``; then count and report the chunk."""
    t = time.perf_counter()
    for name, feats in result.features.items():
        work.store.commit(features={name: feats})
    for pair, found in result.matches.items():
        work.store.commit(matches={pair: found})
    if result.plots:
        work.options.viz_dir.mkdir(parents=True, exist_ok=True)
        for name, data in result.plots.items():
            (work.options.viz_dir / name).write_bytes(data)
    work.summary.times["write"] = work.summary.times.get("write", 0.0) + time.perf_counter() - t
    _forward(work.summary, result, work.on_event)


def _extract_all(pool: _Pool, work: BatchRun, names: list[str]) -> None:
    """Extract ``names`` over the pool's workers, each chunk sent as its images' file bytes."""
    chunks = _chunks(names, len(pool.actors), MAX_CHUNK_IMAGES)

    def failed(i: int, error: str) -> None:
        for name in chunks[i]:
            if name not in work.summary.failed_images:
                fail_image(name, error, work.summary, work.on_event)

    pool.run("extract", len(chunks), lambda i: (_read_images(work, chunks[i]),),
             lambda i, result: _store_result(work, result), failed)
