"""Retrieval pairs: each image with the K images whose global descriptors are most similar.

:func:`retrieval_pairs` is the whole way from an image folder: extract local features into ``features.h5`` (the
images already there are read back, not extracted again: the batch store of :mod:`lightmatch.pipeline.batch`),
aggregate them into VLAD vectors (:mod:`.vlad`; the codebook learned once and saved), store those in
``global-feats.h5`` (:mod:`.store`), then pair by exact top-K (:mod:`.topk`). A user's own hloc
``global-feats.h5`` (NetVLAD, MegaLoc, ...) replaces the first three steps.

Three forms: a collection against itself (each image with its K nearest others), queries against a database
(each query with its K nearest database images, for localisation), and the hybrid of a video: a sequential window
plus K retrieved images per frame for loop closures. Pairs are unique (in either order) and never an image with
itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import h5py
import numpy as np

from ..defaults import NUM_MATCHED
from ..errors import InputError
from ..io.pairs import Pair, list_images, normalise_name, sequential_pairs
from ..io.store import FEATURES_FILE
from ..pipeline.events import BatchSummary, EventCallback
from .store import GLOBAL_FILE, read_global, write_global
from .topk import top_k
from .vlad import Codebook, sample_descriptors, train_codebook, vlad

if TYPE_CHECKING:
    from ..models.base import Extractor

CODEBOOK_FILE = "codebook.npz"


@dataclass
class RetrievalResult:
    """What :func:`retrieval_pairs` made: the pairs, and where the vectors and codebook are."""

    pairs: list[Pair]
    images: list[str]  # the images that have a global descriptor (failed images left out)
    global_path: str
    codebook_path: Optional[str] = None  # None with a user's global descriptors
    extract: Optional[BatchSummary] = None  # the extraction run (None with a user's global descriptors)
    failed_images: dict[str, str] = field(default_factory=dict)


def names_under(image_dir: str | os.PathLike, folder: str | os.PathLike) -> list[str]:
    """The images of ``folder`` (a path relative to ``image_dir``, or an absolute path inside it), named relative
    to ``image_dir``."""
    root = Path(image_dir)
    path = Path(folder) if Path(folder).is_absolute() else root / folder
    try:
        prefix = normalise_name(str(path.resolve()), root.resolve())
    except ValueError as exc:
        raise InputError(f"{folder}: {exc}") from None
    return [f"{prefix}/{name}" for name in list_images(path)]


def pairs_from_neighbours(query_names: Sequence[str], indices: np.ndarray, db_names: Sequence[str]) -> list[Pair]:
    """``(query, neighbour)`` pairs from a top-K index array, query by query and best first; a pair already met in
    either order, and an image with itself, are skipped."""
    pairs: list[Pair] = []
    seen: set[frozenset[str]] = set()
    for query, row in zip(query_names, indices):
        for j in row:
            if j < 0:
                continue
            other = db_names[int(j)]
            key = frozenset((query, other))
            if other == query or key in seen:
                continue
            seen.add(key)
            pairs.append((query, other))
    return pairs


def merge_pairs(*lists: Sequence[Pair]) -> list[Pair]:
    """The pairs of all ``lists`` in order, each unordered pair once, no self-pairs."""
    out: list[Pair] = []
    seen: set[frozenset[str]] = set()
    for pairs in lists:
        for a, b in pairs:
            key = frozenset((a, b))
            if a != b and key not in seen:
                seen.add(key)
                out.append((a, b))
    return out


def read_descriptors(features_path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Local descriptors (N, D) of ``names`` from a ``features.h5`` (hloc layout, stored (D, N))."""
    out = {}
    with h5py.File(features_path, "r") as handle:
        for name in names:
            out[name] = np.asarray(handle[name]["descriptors"][()], np.float32).T
    return out


def load_or_train_codebook(path: Path, descriptors: dict[str, np.ndarray], extractor: str) -> Codebook:
    """The codebook at ``path`` when it exists (checked against ``extractor``), else one learned from
    ``descriptors`` and saved there."""
    dims = {d.shape[1] for d in descriptors.values()}
    if path.is_file():
        codebook = Codebook.load(path)
        for dim in dims:
            codebook.check(extractor, dim, str(path))
        return codebook
    codebook = train_codebook(sample_descriptors(descriptors.values()), extractor)
    codebook.save(path)
    return codebook


def aggregate(store_dir: Path, names: Sequence[str], extractor: str, codebook_path: Path) -> dict[str, np.ndarray]:
    """VLAD vectors of ``names`` from ``store_dir/features.h5``, kept in ``store_dir/global-feats.h5``: vectors
    already there (same codebook) are reused, the others computed and the file rewritten."""
    global_path = store_dir / GLOBAL_FILE
    descriptors = None
    if codebook_path.is_file():
        codebook = Codebook.load(codebook_path)
    else:
        descriptors = read_descriptors(store_dir / FEATURES_FILE, names)
        codebook = load_or_train_codebook(codebook_path, descriptors, extractor)
    attrs = {"lightmatch_global": "vlad", "lightmatch_codebook": codebook.digest,
             "lightmatch_extractor": extractor}
    known = read_global(global_path, names, attrs) if global_path.is_file() else {}
    missing = [n for n in names if n not in known]
    if missing:
        if descriptors is None:
            descriptors = read_descriptors(store_dir / FEATURES_FILE, missing)
        for name in missing:
            codebook.check(extractor, descriptors[name].shape[1], str(codebook_path))
            known[name] = vlad(descriptors[name], codebook)
        everything = read_global(global_path, None, attrs) if global_path.is_file() else {}
        write_global(global_path, {**everything, **known}, attrs)
    return {n: known[n] for n in names}


def retrieval_pairs(
    image_dir: str | os.PathLike,
    store_dir: str | os.PathLike,
    extractor: Optional[Extractor],
    num_matched: int = NUM_MATCHED,
    names: Optional[Sequence[str]] = None,
    query_names: Optional[Sequence[str]] = None,
    window: Optional[int] = None,
    loop: bool = False,
    codebook: Optional[str | os.PathLike] = None,
    global_features: Optional[str | os.PathLike] = None,
    backend: str = "exact",
    workers: int = 2,
    on_event: Optional[EventCallback] = None,
) -> RetrievalResult:
    """Pairs of the images under ``image_dir`` by global-descriptor retrieval.

    Args:
        image_dir: root of the images; names are relative to it.
        store_dir: folder of ``features.h5`` (extracted into, or read back), ``global-feats.h5`` and, by default,
            ``codebook.npz``; the same folder a later ``match -o`` reuses.
        extractor: the local features to aggregate (unused with ``global_features``).
        num_matched: K, the images retrieved per image (per query).
        names: the images to pair (default: every image under ``image_dir``); with ``query_names``, the database.
        query_names: pair each of these with its K nearest images of ``names`` (localisation).
        window: also pair each image with the next ``window`` in name order (video with loop closures);
            ``loop`` closes that sequence.
        codebook: codebook file, used when it exists, else learned and written there (default:
            ``store_dir/codebook.npz``).
        global_features: a user's hloc ``global-feats.h5`` holding every image: no extraction, no codebook.
        backend: top-K search, ``exact`` or ``faiss`` (:func:`.topk.top_k`).
        workers, on_event: as :func:`lightmatch.pipeline.batch.extract_batch` (its events are passed on).
    """
    from ..pipeline.batch import BatchOptions, extract_batch

    image_dir, store_dir = Path(image_dir), Path(store_dir)
    db_names = list(dict.fromkeys(names if names is not None else list_images(image_dir)))
    queries = list(dict.fromkeys(query_names)) if query_names is not None else None
    everyone = list(dict.fromkeys(db_names + (queries or [])))
    result = RetrievalResult([], [], "")
    if global_features is not None:
        vectors = read_global(global_features, everyone)
        missing = [n for n in everyone if n not in vectors]
        if missing:
            raise InputError(f"{global_features}: no global descriptor for {len(missing)} image(s), e.g. "
                             f"'{missing[0]}' (groups are image names relative to {image_dir})")
        result.global_path = str(global_features)
    else:
        summary = extract_batch(image_dir, everyone, store_dir, extractor, BatchOptions(workers=workers), on_event)
        result.extract, result.failed_images = summary, dict(summary.failed_images)
        if summary.interrupted:
            raise KeyboardInterrupt
        usable = [n for n in everyone if n not in summary.failed_images]
        codebook_path = Path(codebook) if codebook is not None else store_dir / CODEBOOK_FILE
        vectors = aggregate(store_dir, usable, extractor.name, codebook_path) if usable else {}
        result.global_path, result.codebook_path = str(store_dir / GLOBAL_FILE), str(codebook_path)
    db_names = [n for n in db_names if n in vectors]
    result.images = [n for n in everyone if n in vectors]
    if not db_names:
        return result
    db = np.stack([vectors[n] for n in db_names])
    if queries is None:
        indices, _ = top_k(db, db, num_matched, exclude_self=True, backend=backend)
        result.pairs = pairs_from_neighbours(db_names, indices, db_names)
        if window is not None:
            result.pairs = merge_pairs(sequential_pairs(db_names, window, loop), result.pairs)
        return result
    queries = [n for n in queries if n in vectors]
    if queries:
        indices, _ = top_k(np.stack([vectors[n] for n in queries]), db, num_matched, backend=backend)
        result.pairs = pairs_from_neighbours(queries, indices, db_names)
    return result
