"""Reading 3x3 homographies from text files (HPatches' ``H_1_k`` layout, also ``match --homography``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from .files import check_regular_file


def parse_numbers(tokens: Sequence[str], where: str) -> list[float]:
    """``tokens`` as finite floats; :class:`InputError` naming ``where`` for anything else."""
    out = []
    for tok in tokens:
        try:
            v = float(tok)
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            raise InputError(f"{where}: {tok!r} is not a finite number")
        out.append(v)
    return out


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; one-line :class:`InputError` for a missing, unreadable or binary file."""
    check_regular_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def check_homography(H: np.ndarray, where: str) -> np.ndarray:
    """``H`` unless it is singular (:class:`InputError` naming ``where``)."""
    if abs(np.linalg.det(H)) < 1e-12:
        raise InputError(f"{where}: homography is singular")
    return H


def read_homography(path: str | os.PathLike) -> np.ndarray:
    """A homography file (3 non-empty lines of 3 numbers: HPatches' ``H_1_k``, ``--homography``) -> ``(3, 3)``
    float64, with the file and line in any error."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 3:
            raise InputError(f"{path}:{lineno}: expected 3 numbers per row, found {len(tokens)}")
        if len(rows) == 3:
            raise InputError(f"{path}:{lineno}: more than 3 rows in a 3x3 homography")
        rows.append(parse_numbers(tokens, f"{path}:{lineno}"))
    if len(rows) != 3:
        raise InputError(f"{path}: expected 3 rows of 3 numbers, found {len(rows)} rows")
    return check_homography(np.array(rows, dtype=np.float64), str(path))
