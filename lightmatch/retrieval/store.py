"""Global descriptors in hloc's ``global-feats.h5`` layout: one group per image name (``/`` nests groups, as in
``features.h5``) holding a ``global_descriptor`` (D,) dataset. hloc's ``pairs_from_retrieval`` reads our files and
we read theirs (NetVLAD, OpenIBL, MegaLoc, ...). File attributes record what made the vectors (the codebook digest
and the extractor), so that vectors of another codebook are never mixed in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import h5py
import numpy as np

from ..errors import InputError, OutputError
from ..io import h5
from ..io.atomic import atomic_output

GLOBAL_FILE = "global-feats.h5"
DATASET = "global_descriptor"


def global_names(handle: h5py.Group) -> list[str]:
    """Names of the images with a global descriptor in an open file, sorted."""
    names: list[str] = []
    handle.visititems(lambda key, obj: names.append(key) if isinstance(obj, h5py.Group) and DATASET in obj
                      else None)
    return sorted(names)


def read_global(path: str | os.PathLike, names: Optional[Sequence[str]] = None,
                attrs: Optional[Mapping] = None) -> dict[str, np.ndarray]:
    """The global descriptors of ``names`` (default: all) as name -> (D,) float32.

    With ``attrs``, a file whose attributes differ reads as empty (its vectors were made otherwise). A name
    missing from the file is left out; the caller decides whether that is an error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such global descriptors file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with handle:
        if attrs is not None and any(_plain(handle.attrs.get(k)) != _plain(v) for k, v in attrs.items()):
            return {}
        wanted = global_names(handle) if names is None else names
        out = {}
        for name in wanted:
            if name in handle and isinstance(handle[name], h5py.Group) and DATASET in handle[name]:
                out[name] = np.asarray(handle[name][DATASET][()], np.float32).reshape(-1)
    return out


def write_global(path: str | os.PathLike, vectors: Mapping[str, np.ndarray], attrs: Mapping) -> None:
    """Write ``vectors`` (name -> (D,)) with ``attrs`` as a new ``global-feats.h5``, replacing ``path``
    atomically."""
    try:
        with atomic_output(path, "the global descriptors") as tmp:
            with h5py.File(tmp, "w") as handle:
                h5.set_attrs(handle, attrs)
                for name, vector in vectors.items():
                    handle.require_group(name).create_dataset(DATASET, data=np.asarray(vector, np.float32))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write global descriptors ({exc.strerror or exc})") from exc

def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
