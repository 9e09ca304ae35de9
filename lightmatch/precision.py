"""Arithmetic precision of the networks: one resolution of a requested precision to a dtype, one context applying it.

A model is asked for ``auto``, ``fp32``, ``fp16`` or ``bf16``. :func:`resolve` turns that, for a device, into the
dtype the network computes in (None: float32, no autocast). ``auto`` means one thing everywhere: the lower precision
validated for that model on that device (its ``auto`` table: LightGlue and SuperGlue run fp16 on CUDA; the
extractors have none, so fp32), else fp32. :func:`autocast` applies a resolved dtype (or nothing), and
:func:`name` is how stores record it. Importing this module does not import torch (the CLI validates options
with :data:`PRECISIONS` before any model is loaded).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16"}  # fp32: None (no autocast)
# ``auto`` of the matchers whose fp16 results are validated on CUDA (LightGlue, SuperGlue): device type -> precision
AUTO_MATCHER: Mapping[str, str] = {"cuda": "fp16"}


def check(precision: str, choices: Sequence[str] = PRECISIONS, option: str = "precision") -> str:
    """``precision`` when it is one of ``choices``, else a :class:`ConfigError` naming them."""
    if precision not in choices:
        raise ConfigError(f"unknown {option} {precision!r}: choose {', '.join(choices)}")
    return precision


def resolve(precision: str, device: torch.device | str, auto: Mapping[str, str] = {}) -> Optional[torch.dtype]:
    """The compute dtype of ``precision`` on ``device``: None for float32 (no autocast), else fp16/bf16. ``auto``
    is the model's table of device type -> validated lower precision (device types not in it run fp32)."""
    import torch

    check(precision)
    if precision == "auto":
        precision = auto.get(torch.device(device).type, "fp32")
    return getattr(torch, DTYPE_NAMES[precision]) if precision in DTYPE_NAMES else None


def name(dtype: Optional[torch.dtype]) -> str:
    """``fp16`` / ``bf16`` for a compute dtype, ``fp32`` for None: what stores record."""
    names = {torch_name: key for key, torch_name in DTYPE_NAMES.items()}
    return names.get(str(dtype).removeprefix("torch."), "fp32")


def autocast(dtype: Optional[torch.dtype], device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type; a no-op context for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type, dtype=dtype)
