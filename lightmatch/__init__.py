"""lightmatch: feature extraction and matching from the command line and from Python.

    >>> import lightmatch
    >>> extractor = lightmatch.load_extractor("aliked", max_keypoints=2048)
    >>> matcher = lightmatch.load_matcher("lightglue", features="aliked")
    >>> result = lightmatch.match_pair("a.jpg", "b.jpg", extractor, matcher, output_dir="out")
    >>> result.matches.pairs()  # (M, 2) indices into result.features0 / features1 keypoints

Names are imported on first use, so that ``import lightmatch`` (and the CLI's start) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import LightmatchError

__version__ = "0.1.0"

_EXPORTS = {
    "Extractor": ".models.base",
    "Matcher": ".models.base",
    "Features": ".types",
    "Matches": ".types",
    "load_image": ".io.images",
    "load_extractor": ".models.factory",
    "load_matcher": ".models.factory",
    "resolve_device": ".models.factory",
    "ModelSpec": ".pipeline.spec",
    "PairResult": ".pipeline.match",
    "match_pair": ".pipeline.match",
    "match_batch": ".pipeline.batch",
    "extract_batch": ".pipeline.batch",
    "PairSource": ".pair_sources",
    "RetrievalSettings": ".pair_sources",
    "source_pairs": ".pair_sources",
}

__all__ = ["LightmatchError", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightmatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
