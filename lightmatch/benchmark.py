"""Matcher latency, measured as LightGlue's ``benchmark.py`` does.

For every keypoint budget ``N`` (256 ... 4096) the extractor is set to return exactly ``N`` keypoints per image
(:meth:`Extractor.with_keypoint_budget`: detection threshold disabled, ALIKED top-k with ``detection_threshold=-1``,
DISK ``n=N`` with threshold 0, SuperPoint ``exact_keypoints=N``; SIFT and XFeat can only be capped, so they may
return fewer), each image is extracted once per ``N`` (not timed), and the matcher alone is timed: ``warmup``
untimed calls, then the mean (and standard deviation) over ``repeat`` timed calls, with ``torch.cuda.synchronize()``
around each call on CUDA. LightGlue runs in two configurations, ``full`` (depth and width confidence -1: all layers,
no pruning) and ``adaptive`` (the matcher's own settings, by default LightGlue's 0.95 / 0.99); other matchers run once
as they are.

With ``reference`` models (``lightmatch benchmark --backend onnxruntime``: the torch models the measured ones were
exported from) both run in the same loop, alternating call by call, each on its own features: every
configuration, and the extraction of each image (config ``extract``, mean per image) since the backends differ
there too. The rows of the measured backend give the share of matches identical to torch's (``same_matches``).

Pairs: LightGlue's ``easy`` (``DSC_0411.JPG``, ``DSC_0410.JPG``) and ``difficult`` (``sacre_coeur1.jpg``,
``sacre_coeur2.jpg``) pairs when a folder holding them is given, otherwise consecutive sorted images of that
folder; the bundled sample pair (``assets/sample0.jpg``, ``sample1.jpg``) is always included when present.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .errors import ConfigError, InputError
from .io.images import load_image
from .io.pairs import list_images
from .models.base import Extractor, Matcher
from .types import Features, Matches

ProgressCallback = Callable[[int, int], None]

DEFAULT_NUM_KEYPOINTS = (256, 512, 1024, 2048, 4096)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLE_PAIR = ("sample", ASSETS / "sample0.jpg", ASSETS / "sample1.jpg")
LIGHTGLUE_PAIRS = (("easy", "DSC_0411.JPG", "DSC_0410.JPG"), ("difficult", "sacre_coeur1.jpg", "sacre_coeur2.jpg"))


@dataclass
class BenchmarkPair:
    """A named image pair to time matching on."""

    name: str
    path0: Path
    path1: Path


@dataclass
class BenchmarkRecord:
    """One measurement: matcher ``config`` on ``pair`` with ``num_keypoints`` requested per image."""

    pair: str
    config: str
    num_keypoints: int
    keypoints0: int
    keypoints1: int
    mean_ms: float
    std_ms: float
    matches: int
    stop_layer: int
    times_ms: list[float] = field(default_factory=list)
    backend: str = ""  # set when backends are compared (``reference``)
    same_matches: Optional[float] = None  # share of matches0 equal to the reference backend's

    @property
    def row(self) -> str:
        """The record's row name in the tables: the config, after the backend when backends are compared."""
        return f"{self.backend} {self.config}" if self.backend else self.config


@dataclass
class BenchmarkReport:
    """Everything :func:`run_benchmark` measured, and on what."""

    device: str
    threads: int
    torch_version: str
    features: str
    matcher: str
    exact_keypoints: bool
    num_keypoints: list[int]
    configs: dict[str, dict[str, float]]
    repeat: int
    warmup: int
    pairs: list[dict[str, str]]
    records: list[BenchmarkRecord]
    cpu: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def series(self) -> dict[str, list[float]]:
        """Mean latency (ms) per ``"<pair> <config>"``, ordered as :attr:`num_keypoints` (for plots)."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            out.setdefault(f"{r.pair} {r.row}", []).append(r.mean_ms)
        return out


# --------------------------------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------------------------------


def benchmark_pairs(pairs_dir: Optional[str | os.PathLike] = None, include_sample: bool = True) -> list[BenchmarkPair]:
    """The pairs to time: the bundled sample pair (when present and ``include_sample``), then those of
    ``pairs_dir``: LightGlue's easy and difficult pairs when it holds their files, otherwise its images sorted by
    name and paired consecutively (1st with 2nd, 3rd with 4th, ...)."""
    pairs: list[BenchmarkPair] = []
    if include_sample and SAMPLE_PAIR[1].is_file() and SAMPLE_PAIR[2].is_file():
        pairs.append(BenchmarkPair(*SAMPLE_PAIR))
    if pairs_dir is not None:
        folder = Path(pairs_dir)
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        images = [folder / name for name in list_images(folder, recursive=False)]
        known = [BenchmarkPair(name, folder / a, folder / b) for name, a, b in LIGHTGLUE_PAIRS
                 if (folder / a).is_file() and (folder / b).is_file()]
        if known:
            pairs.extend(known)
        else:
            if len(images) < 2:
                raise InputError(f"{folder}: needs at least two images to make a pair, found {len(images)}")
            for a, b in zip(images[0::2], images[1::2]):
                pairs.append(BenchmarkPair(f"{a.stem}-{b.stem}", a, b))
    if not pairs:
        raise InputError(f"the bundled sample pair is not installed ({SAMPLE_PAIR[1]}): give --pairs-dir")
    return pairs


# --------------------------------------------------------------------------------------------------------------------
# Matcher configurations
# --------------------------------------------------------------------------------------------------------------------


def matcher_configs(matcher: Matcher) -> dict[str, dict[str, float]]:
    """LightGlue: ``full`` (depth and width confidence -1) and ``adaptive`` (the matcher's settings); otherwise a
    single configuration named after the matcher, with no changes."""
    settings = matcher.matching_settings()
    if "depth_confidence" in settings and "width_confidence" in settings:
        return {"full": {"depth_confidence": -1.0, "width_confidence": -1.0},
                "adaptive": {"depth_confidence": float(settings["depth_confidence"]),
                             "width_confidence": float(settings["width_confidence"])}}
    return {matcher.name: {}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_many(calls: dict[str, Callable[[], Any]], repeat: int, warmup: int,
                 device: torch.device) -> dict[str, tuple[list[float], Any]]:
    """Time several calls alternately, call by call (so that a change of machine load hits them alike):
    ``warmup`` untimed rounds, then ``repeat`` timed ones. Returns each call's times (ms) and last result."""
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, call in calls.items():
            results[name] = call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            results[name] = call()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: (times[name], results[name]) for name in calls}


def measure(matcher: Matcher, feats0: Features, feats1: Features, repeat: int, warmup: int,
            device: torch.device) -> tuple[list[float], Matches]:
    """Time ``matcher.match(feats0, feats1)``: ``warmup`` untimed calls, then ``repeat`` timed ones.

    Returns the times in milliseconds and the last result.
    """
    return measure_many({"": lambda: matcher.match(feats0, feats1)}, repeat, warmup, device)[""]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmark(
    extractor: Extractor,
    matcher: Matcher,
    num_keypoints: Sequence[int] = DEFAULT_NUM_KEYPOINTS,
    pairs: Optional[Sequence[BenchmarkPair]] = None,
    pairs_dir: Optional[str | os.PathLike] = None,
    repeat: int = 100,
    warmup: int = 10,
    progress: Optional[ProgressCallback] = None,
    reference: Optional[tuple[Extractor, Matcher]] = None,
) -> BenchmarkReport:
    """Time ``matcher`` on features of ``extractor`` at each keypoint count (see the module docstring).

    The models run on their own device; the extractor's keypoint settings and the matcher's depth/width settings
    are changed during the run and restored afterwards.

    Args:
        num_keypoints: keypoints per image, e.g. ``[256, 512, 1024, 2048, 4096]``.
        pairs: the pairs to time; default: :func:`benchmark_pairs` of ``pairs_dir``.
        repeat: timed calls per measurement (LightGlue: 100). warmup: untimed calls first (LightGlue: 10).
        progress: ``progress(done, total)`` after each measurement.
        reference: the torch extractor and matcher to compare against in the same run (see the module docstring).
    """
    num_keypoints = [int(n) for n in num_keypoints]
    if not num_keypoints or any(n <= 0 for n in num_keypoints):
        raise ConfigError(f"--num-keypoints must be positive numbers, got {num_keypoints}")
    if repeat < 1 or warmup < 0:
        raise ConfigError(f"--repeat must be >= 1 and --warmup >= 0, got {repeat} and {warmup}")
    pairs = list(pairs) if pairs is not None else benchmark_pairs(pairs_dir)
    device = matcher.device
    configs = matcher_configs(matcher)
    images: dict[Path, torch.Tensor] = {}
    for pair in pairs:
        for path in (pair.path0, pair.path1):
            if path not in images:
                images[path] = load_image(path)
    backends = {"": (extractor, matcher)} if reference is None else {
        "torch": reference, matcher.backend: (extractor, matcher)}
    records: list[BenchmarkRecord] = []
    total = len(num_keypoints) * (len(configs) + (reference is not None)) * len(pairs)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    exact = True
    for n in num_keypoints:
        budgeted: dict[str, Extractor] = {}
        for backend, (ext, _) in backends.items():
            budgeted[backend], exact_n = ext.with_keypoint_budget(n)
            exact = exact and exact_n
        feats = {backend: {path: ext.extract(image) for path, image in images.items()}  # not timed
                 for backend, ext in budgeted.items()}
        for pair in pairs if reference is not None else ():  # extraction, per image
            timed = measure_many({b: lambda ext=ext, pair=pair: [ext.extract(images[p]) for p in
                                                                 (pair.path0, pair.path1)]
                                  for b, ext in budgeted.items()}, repeat, warmup, device)
            for backend, (times, _) in timed.items():
                f0, f1 = feats[backend][pair.path0], feats[backend][pair.path1]
                per_image = [t / 2 for t in times]
                records.append(BenchmarkRecord(pair.name, "extract", n, len(f0), len(f1),
                                               statistics.fmean(per_image), statistics.pstdev(per_image), 0, 0,
                                               [round(t, 3) for t in per_image], backend))
            step()
        for config, settings in configs.items():
            configured = {backend: mat.with_settings(**settings) for backend, (_, mat) in backends.items()}
            for pair in pairs:
                timed = measure_many({b: lambda mat=mat, b=b: mat.match(feats[b][pair.path0], feats[b][pair.path1])
                                      for b, mat in configured.items()}, repeat, warmup, device)
                first = next(iter(timed.values()))[1].matches0.cpu()  # torch's, when compared
                for backend, (times, result) in timed.items():
                    f0, f1 = feats[backend][pair.path0], feats[backend][pair.path1]
                    same = None if backend in ("", "torch") else (
                        float((result.matches0.cpu() == first).double().mean()) if len(first) == len(f0) else 0.0)
                    records.append(BenchmarkRecord(
                        pair.name, config, n, len(f0), len(f1), statistics.fmean(times),
                        statistics.pstdev(times), result.num_matches, result.stop_layer,
                        [round(t, 3) for t in times], backend, same))
                step()
    return BenchmarkReport(
        device=str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        threads=torch.get_num_threads(), torch_version=torch.__version__, features=extractor.name,
        matcher=matcher.name, exact_keypoints=exact, num_keypoints=num_keypoints, configs=configs, repeat=repeat,
        warmup=warmup, pairs=[{"name": p.name, "image0": str(p.path0), "image1": str(p.path1)} for p in pairs],
        records=records, cpu=_cpu_name())


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def _table(title: str, columns: Sequence[int], rows: dict[str, list[float]], fmt: str) -> list[str]:
    """benchmark.py's ``print_as_table`` layout."""
    header = f"{title:24} " + " ".join(f"{x:>7}" for x in columns)
    lines = ["", header, "-" * len(header)]
    lines += [f"{name:24} " + " ".join(format(v, fmt).rjust(7) for v in values) for name, values in rows.items()]
    return lines


def format_benchmark_tables(report: BenchmarkReport) -> str:
    """Header lines (device, threads, settings), then per pair: latency (ms), matches, stopping layer and
    keypoints, each as a table with one column per keypoint count (LightGlue's ``print_as_table`` layout)."""
    kind = "exactly N per image, detection threshold disabled" if report.exact_keypoints else "at most N per image"
    lines = [f"Running benchmark on device: {report.device}, {report.threads} threads (torch {report.torch_version}"
             + (f", {report.cpu}" if report.cpu else "") + ")",
             f"features: {report.features} ({kind}), matcher: {report.matcher}, warm-up {report.warmup}, "
             f"mean over {report.repeat} repetitions; "
             + ("matcher and extraction" if any(r.backend for r in report.records)
                else "matcher only (extraction not timed)"),
             *([f"backends: {', '.join(dict.fromkeys(r.backend for r in report.records))}, each on its own "
                "features; extract: mean per image; same matches: share of matches0 equal to torch's"]
               if any(r.backend for r in report.records) else []),
             "configs: " + "; ".join(f"{name} " + (" ".join(f"{k}={v:g}" for k, v in s.items()) or "(as built)")
                                    for name, s in report.configs.items())]
    cols = report.num_keypoints
    for pair in report.pairs:
        recs = [r for r in report.records if r.pair == pair["name"]]

        def rows(attr: str, kept=lambda r: r.config != "extract") -> dict[str, list[float]]:
            out: dict[str, list[float]] = {}
            for r in recs:
                if kept(r):
                    out.setdefault(r.row, []).append(getattr(r, attr))
            return out

        lines += _table(f"{pair['name']} [ms]", cols, rows("mean_ms", lambda r: True), ".1f")
        lines += _table(f"{pair['name']} matches", cols, rows("matches"), "d")
        lines += _table(f"{pair['name']} stop layer", cols, rows("stop_layer"), "d")
        same = rows("same_matches", lambda r: r.same_matches is not None)
        if same:
            lines += _table(f"{pair['name']} same matches [%]", cols,
                            {k: [100 * x for x in v] for k, v in same.items()}, ".1f")
        first = [r for r in recs if r.row == recs[0].row] if recs else []
        lines += _table(f"{pair['name']} keypoints", cols, {Path(pair["image0"]).name: [r.keypoints0 for r in first],
                                                           Path(pair["image1"]).name: [r.keypoints1 for r in first]},
                        "d")
    return "\n".join(lines)
