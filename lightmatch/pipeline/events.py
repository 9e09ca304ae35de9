"""What a batch run reports: events sent while it works (start, each image, each pair) and its summary.

The library never prints; the CLI turns these into progress, text lines or JSON lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

TIME_KEYS = ("decode", "wait", "extract", "read", "match", "verify", "viz", "write", "consolidate")
EXTRACT_TIME_KEYS = ("decode", "wait", "extract", "write", "consolidate")  # the stages of `extract`


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
    stop_layer: Optional[int] = None  # layers an adaptive matcher ran ...
    layers: Optional[int] = None  # ... of how many it has
    correct: Optional[int] = None  # matches correct under a ground truth (single pair with --homography)
    rotation_degrees: Optional[int] = None  # image 1's turn kept by a rotation search
    error: Optional[str] = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The JSON line of a pair: the same keys for single-pair ``match --json`` and batch pair lines."""
        out: dict = {"type": "pair", "image0": self.name0, "image1": self.name1, "status": self.status}
        for key in ("keypoints0", "keypoints1", "matches", "inliers", "correct", "stop_layer", "layers",
                    "rotation_degrees", "error"):
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
    extractor: str = ""
    matcher: Optional[str] = None
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
    pairs_verified: int = 0
    inliers: int = 0  # over the verified pairs
    executor: str = "local"
    per_worker: dict[str, dict[str, float]] = field(default_factory=dict)  # ray: worker -> pairs, images, busy_s

    @property
    def time_keys(self) -> tuple[str, ...]:
        """The stages this command has."""
        return TIME_KEYS if self.command == "match" else EXTRACT_TIME_KEYS

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
        out = {"type": "summary", "command": self.command, "extractor": self.extractor}
        if self.matcher is not None:
            out["matcher"] = self.matcher
        out["features"] = self.features_path
        if self.matches_path is not None:
            out["matches"] = self.matches_path
        for key in ("pairs_total", "pairs_matched", "pairs_skipped", "pairs_failed", "pairs_ignored"):
            if self.command == "match" or getattr(self, key):
                out[key] = getattr(self, key)
        if self.pairs_verified:
            out.update(pairs_verified=self.pairs_verified, inliers=self.inliers)
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
        out["time_s"] = {k: round(self.times.get(k, 0.0), 3) for k in self.time_keys}
        out["workers"] = self.workers
        if self.executor != "local":
            out["executor"] = self.executor
            out["per_worker"] = {name: {**stats, "pairs_per_s": round(worker_rate(stats), 3)}
                                 for name, stats in self.per_worker.items()}
        out["interrupted"] = self.interrupted
        return out


def worker_rate(stats: dict[str, float]) -> float:
    """Pairs per second of busy time of one worker of a distributed run."""
    return stats.get("pairs", 0) / stats["busy_s"] if stats.get("busy_s") else 0.0


EventCallback = Callable[[Event], None]


def emit(on_event: Optional[EventCallback], event: Event) -> None:
    """Send ``event`` to ``on_event`` when there is one."""
    if on_event is not None:
        on_event(event)
