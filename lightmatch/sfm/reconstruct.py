"""``reconstruct``: from a folder of photos to COLMAP models, resumably.

Stages, each on the library functions the single commands use::

    list images ──► pairs (exhaustive up to EXHAUSTIVE_MAX images, else retrieval) ──► OUT/pairs.txt
                ──► extract + match + verify (:func:`lightmatch.pipeline.batch.match_batch`) ──► OUT/features.h5,
                    OUT/matches.h5
                ──► COLMAP database (:func:`lightmatch.io.colmap.export_colmap`) ──► OUT/database.db
                ──► pycolmap mapper (:mod:`.mapper`) ──► OUT/sparse/N/, OUT/top_view_N.png (:mod:`.picture`)

**Resume.** Extraction and matching go through the batch store: a killed run redoes no finished image or pair;
the database, the models and the pictures are rebuilt from the stores (seconds). **Bad input.** An unreadable
image is reported and left out, as in ``match``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..defaults import NUM_MATCHED, SEQUENTIAL_WINDOW
from ..errors import InputError
from ..io.colmap import export_colmap
from ..io.pairs import list_images, write_pairs
from ..models.base import Extractor, Matcher
from ..pair_sources import PairSource, RetrievalSettings, source_pairs
from ..pipeline.events import BatchSummary, EventCallback
from ..pipeline.verify import VerifyOptions
from .mapper import ModelStats, import_pycolmap, model_stats, run_mapper
from .picture import draw_model

EXHAUSTIVE_MAX = 30  # images up to which "auto" pairs exhaustively (measured: docs/reconstruction.md)
PAIR_MODES = ("auto", "exhaustive", "retrieval", "sequential")
VERIFY_MODEL = "fundamental"
StageCallback = Callable[[str], None]


@dataclass
class ReconstructOptions:
    """How ``reconstruct`` pairs, verifies and maps (defaults as the command's)."""

    pairs_mode: str = "auto"
    num_matched: int = NUM_MATCHED
    window: int = SEQUENTIAL_WINDOW  # sequential
    retrieval: Optional[int] = None  # sequential: also K retrieved images per image
    codebook: Optional[str] = None
    global_features: Optional[str] = None
    mapper: str = "incremental"
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = False
    verify: VerifyOptions = field(default_factory=lambda: VerifyOptions(VERIFY_MODEL))
    seed: int = 0
    workers: int = 2
    mapper_log: bool = False  # COLMAP's own log lines on stderr


@dataclass
class Reconstruction:
    """What a ``reconstruct`` run found. ``registered``, ``points`` are totals over the models; the means are over
    all their tracks (track length) and observations (reprojection error)."""

    images: int = 0
    registered: int = 0
    models: int = 0
    points: int = 0
    mean_track_length: Optional[float] = None
    mean_reprojection_error: Optional[float] = None
    pairs_mode: str = ""
    pairs: int = 0
    model_stats: list[ModelStats] = field(default_factory=list)
    pictures: list[str] = field(default_factory=list)
    failed_images: dict[str, str] = field(default_factory=dict)
    match: Optional[BatchSummary] = None
    times: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    output_dir: str = ""

    def to_json(self) -> dict:
        out = {"type": "reconstruction", "images": self.images, "registered": self.registered,
               "models": self.models, "points": self.points,
               "mean_track_length": _round(self.mean_track_length),
               "mean_reprojection_error": _round(self.mean_reprojection_error),
               "pairs_mode": self.pairs_mode, "pairs": self.pairs}
        if self.match is not None:
            out.update({key: getattr(self.match, key) for key in ("images_extracted", "images_reused",
                                                                   "pairs_matched", "pairs_skipped",
                                                                   "pairs_failed")})
        out["images_failed"] = len(self.failed_images)
        if self.failed_images:
            out["failed_images"] = self.failed_images
        out["model_list"] = [{**vars(s), "mean_track_length": _round(s.mean_track_length),
                              "mean_reprojection_error": _round(s.mean_reprojection_error)}
                             for s in self.model_stats]
        out["pictures"] = self.pictures
        out["time_s"] = {k: round(v, 2) for k, v in self.times.items()}
        out["output"] = self.output_dir
        out["interrupted"] = self.interrupted
        return out


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 4)


def choose_pairs_mode(mode: str, num_images: int) -> str:
    """``auto``: exhaustive up to :data:`EXHAUSTIVE_MAX` images, retrieval above; other modes as given."""
    if mode == "auto":
        return "exhaustive" if num_images <= EXHAUSTIVE_MAX else "retrieval"
    return mode


def _retrieval_settings(mode: str, options: ReconstructOptions) -> RetrievalSettings:
    """The retrieval settings of ``options`` for the pairing ``mode`` (none where the mode retrieves nothing)."""
    if mode == "retrieval":
        return RetrievalSettings(num_matched=options.num_matched, codebook=options.codebook,
                                 global_features=options.global_features)
    if mode == "sequential" and options.retrieval is not None:
        return RetrievalSettings(sequential_k=options.retrieval, codebook=options.codebook,
                                 global_features=options.global_features)
    return RetrievalSettings()


def reconstruct(image_dir: str | os.PathLike, output_dir: str | os.PathLike, extractor: Extractor,
                matcher: Matcher, options: Optional[ReconstructOptions] = None,
                on_event: Optional[EventCallback] = None,
                on_stage: Optional[StageCallback] = None) -> Reconstruction:
    """Reconstruct the images under ``image_dir`` into ``output_dir`` (see the module documentation).

    ``on_event`` receives the batch events of extraction and matching; ``on_stage`` a short line as each stage
    starts. Returns a :class:`Reconstruction` (``interrupted`` when Ctrl-C stopped extraction or matching: the
    work done is saved, a rerun finishes it)."""
    import_pycolmap()  # before any work: say which extra is missing
    options = options or ReconstructOptions()
    image_dir, out = Path(image_dir), Path(output_dir)
    names = list_images(image_dir)
    if len(names) < 2:
        raise InputError(f"{image_dir}: found {len(names)} image(s); a reconstruction needs at least two")
    result = Reconstruction(images=len(names), output_dir=str(out))
    stage = on_stage or (lambda text: None)
    mode = choose_pairs_mode(options.pairs_mode, len(names))
    result.pairs_mode = mode

    start = time.perf_counter()
    source = PairSource(str(image_dir), mode=mode, window=options.window if mode == "sequential" else None,
                        retrieval=_retrieval_settings(mode, options))
    k = source.retrieved_per_image
    if k is not None:
        stage(f"pairs: retrieval, {k} per image (extracting features of {len(names)} images)")
    found = source_pairs(source, out, extractor, names=names, workers=options.workers, on_event=on_event)
    pairs = found.pairs
    result.failed_images.update(found.failed_images)
    write_pairs(out / "pairs.txt", pairs)
    result.pairs = len(pairs)
    result.times["pairs"] = time.perf_counter() - start

    from ..pipeline.batch import BatchOptions, match_batch

    stage(f"match: {len(pairs)} pairs ({mode}) of {len(names)} images, verified ({options.verify.model})")
    t = time.perf_counter()
    summary = match_batch(image_dir, pairs, out, extractor, matcher,
                          BatchOptions(verify=options.verify, workers=options.workers), on_event)
    result.match = summary
    result.times["match"] = time.perf_counter() - t
    result.failed_images.update(summary.failed_images)
    if summary.interrupted:
        result.interrupted = True
        return result

    stage("database: COLMAP export")
    t = time.perf_counter()
    failed = {(a, b) for a, b, _ in summary.failed_pairs}
    done = [p for p in pairs if p not in failed and not set(p) & set(result.failed_images)]
    export_colmap(image_dir, out / "features.h5", out / "matches.h5", out / "database.db", pairs=done,
                  camera_model=options.camera_model, single_camera=options.single_camera)
    result.times["database"] = time.perf_counter() - t

    stage(f"mapper: {options.mapper}")
    t = time.perf_counter()
    models = run_mapper(out / "database.db", image_dir, out / "sparse", options.mapper, options.seed,
                        options.mapper_log)
    result.times["mapper"] = time.perf_counter() - t
    for picture in out.glob("top_view_*.png"):  # an earlier run's pictures of models that may be gone
        picture.unlink()
    for index, model in models.items():
        stats = model_stats(model, out / "sparse" / str(index))
        result.model_stats.append(stats)
        path = out / f"top_view_{index}.png"
        draw_model(model, path, f"model {index}: {stats.registered} images, {stats.points} points")
        result.pictures.append(str(path))
    _totals(result)
    result.times["total"] = time.perf_counter() - start
    return result


def _totals(result: Reconstruction) -> None:
    stats = result.model_stats
    result.models = len(stats)
    result.registered = sum(s.registered for s in stats)
    result.points = sum(s.points for s in stats)
    observations = sum(s.observations for s in stats)
    if result.points:
        result.mean_track_length = observations / result.points
    if observations:
        result.mean_reprojection_error = sum(s.mean_reprojection_error * s.observations for s in stats) / observations
