"""What an evaluation returns and writes: the report, JSON-safe numbers, ``results.jsonl`` and ``summary.json``.

Shared by the pose (:mod:`.pose`) and homography (:mod:`.homography`) evaluations.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..io.atomic import atomic_output

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called after each completed step (here: each pair)."""


@dataclass
class EvalReport:
    """What an evaluation returns: ``summary`` (the table's numbers), ``pairs`` (one JSON-ready record per pair),
    ``settings`` (how it ran) and ``files`` (paths written)."""

    summary: dict[str, Any]
    pairs: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The summary and settings as one JSON-serialisable object (non-finite numbers as ``null``)."""
        return finite({**self.summary, "settings": self.settings, "files": self.files})


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (nested in dicts, lists, NumPy scalars) as ``None``, for JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


def write_report(report: EvalReport, output_dir: Path) -> dict[str, str]:
    """Write ``results.jsonl`` (one record per pair) and ``summary.json`` into ``output_dir``, both strict JSON
    (non-finite numbers as ``null``)."""
    results = output_dir / "results.jsonl"
    summary = output_dir / "summary.json"
    files = {"results": str(results), "summary": str(summary), **report.files}
    texts = {results: "".join(json.dumps(finite(r)) + "\n" for r in report.pairs),
             summary: json.dumps(finite({**report.summary, "settings": report.settings, "files": files}),
                                 indent=2) + "\n"}
    for path, text in texts.items():
        with atomic_output(path, "evaluation results") as tmp:
            tmp.write_text(text, encoding="utf-8")
    return {"results": str(results), "summary": str(summary)}
