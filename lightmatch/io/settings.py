"""Store settings: the ``lightmatch_*`` file attributes that record the models and settings a store was made
with, compared before anything is added to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ConfigError

# recorded since stores name their weights, precision and device: compared only when both sides have them (a store
# written before is still resumed); the device is only recorded (the same precision gives the same results)
COMPARED_WHEN_RECORDED = ("lightmatch_matcher_weights", "lightmatch_precision")
RECORDED_ONLY = ("lightmatch_device",)


def normalise_attrs(attrs: dict, defaults: Optional[dict] = None) -> dict:
    """``lightmatch_*`` attributes as comparable plain values (JSON text of dicts with sorted keys)."""
    out = dict(defaults or {})
    for key, value in attrs.items():
        if not key.startswith("lightmatch_") or key.startswith("lightmatch_part") or key == "lightmatch_layout":
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            value = value.tolist()
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


def compare_attrs(path: Path, stored: dict, wanted: dict, what: str, defaults: Optional[dict],
                  source: Optional[Path] = None) -> None:
    """Raise :class:`ConfigError` naming the first setting where ``stored`` and ``wanted`` differ."""
    s, w = normalise_attrs(stored, defaults), normalise_attrs(wanted, defaults)
    diffs = [k for k in sorted(set(s) | set(w)) if s.get(k) != w.get(k) and k not in RECORDED_ONLY
             and (k not in COMPARED_WHEN_RECORDED or (k in s and k in w))]
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
