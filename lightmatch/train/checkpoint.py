"""The files training reads back: resume checkpoints (``last.pth``, ``best.pth``) and feature-cache items.

Both hold tensors and plain values only (dicts, lists, numbers, strings, None), tagged with a format name, and are
read with ``torch.load(weights_only=True)``: a crafted file cannot run code when it is read, and a file that is not
what we wrote is refused with one line naming it (:class:`~lightmatch.errors.InputError`).
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_output
from ..types import Features
from ..weights import _load_error

CACHE_FORMAT = "lightmatch-feature-cache/1"
_FEATURE_TENSORS = ("keypoints", "scores", "descriptors")


def save(obj: dict[str, Any], path: str | os.PathLike, what: str) -> None:
    """Write ``obj`` (tensors and plain values) atomically."""
    with atomic_output(path, what) as tmp:
        torch.save(obj, tmp)


def load(path: str | os.PathLike, fmt: str, what: str, hint: str,
         map_location: Optional[str | torch.device] = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save` with format ``fmt``; anything else is an :class:`InputError` naming
    ``path`` and ``what`` it should be, then ``hint`` (what to do)."""
    try:
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol: the refusal says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad or unsafe file
        raise InputError(f"{path}: not a {what} written by lightmatch ({_load_error(exc)}); {hint}") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else None
        detail = f"format {found!r}, expected {fmt!r}" if isinstance(found, str) else "no lightmatch format tag"
        raise InputError(f"{path}: not a {what} written by this lightmatch ({detail}); {hint}")
    return obj


# ------------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, Python, NumPy) as tensors and plain lists."""
    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [version, list(words), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))


# ------------------------------------------------------------------------------------------------ features
def features_to_dict(f: Features) -> dict[str, Any]:
    """A :class:`Features` as a dict of tensors and a plain size."""
    return {"keypoints": f.keypoints, "scores": f.scores, "descriptors": f.descriptors,
            "image_size": [int(v) for v in f.image_size], "scales": f.scales, "oris": f.oris}


def features_from_dict(d: Any, path: Path) -> Features:
    """The inverse of :func:`features_to_dict`; a malformed entry is an :class:`InputError` naming ``path``."""
    ok = isinstance(d, dict) and all(isinstance(d.get(k), torch.Tensor) for k in _FEATURE_TENSORS) \
        and isinstance(d.get("image_size"), list) and len(d["image_size"]) == 2 \
        and all(d.get(k) is None or isinstance(d[k], torch.Tensor) for k in ("scales", "oris"))
    if not ok:
        raise InputError(f"{path}: feature-cache entry is malformed; delete the file (or its cache folder)")
    return Features(d["keypoints"], d["scores"], d["descriptors"], tuple(int(v) for v in d["image_size"]),
                    d["scales"], d["oris"])


def save_cache_item(path: Path, f0: Features, f1: Features, H: np.ndarray) -> None:
    """One cached sample: the features of both views and ``H_0to1``."""
    save({"format": CACHE_FORMAT, "f0": features_to_dict(f0), "f1": features_to_dict(f1),
          "H": torch.from_numpy(np.asarray(H, dtype=np.float64))}, path, "feature cache")


def load_cache_item(path: Path) -> tuple[Features, Features, np.ndarray]:
    """Read what :func:`save_cache_item` wrote."""
    item = load(path, CACHE_FORMAT, "feature-cache file", "delete it (or its cache folder) to recompute it")
    H = item.get("H")
    if not isinstance(H, torch.Tensor) or tuple(H.shape) != (3, 3):
        raise InputError(f"{path}: feature-cache entry is malformed; delete the file (or its cache folder)")
    return features_from_dict(item.get("f0"), path), features_from_dict(item.get("f1"), path), H.numpy()
