"""Where a batch's pairs come from: a pairs file (or standard input), or the images of a folder paired
exhaustively, sequentially (a window, optionally closed into a loop), by retrieval, or sequentially plus
retrieval (loop closures of a video).

A :class:`PairSource` says which; :func:`source_pairs` turns it into pairs. The CLI's ``match --image-dir``,
``pairs`` and ``reconstruct`` all pair through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from .defaults import NUM_MATCHED, SEQUENTIAL_WINDOW
from .errors import ConfigError, InputError
from .io.pairs import Pair, exhaustive_pairs, list_images, read_pairs, sequential_pairs
from .pipeline.events import EventCallback
from .retrieval.pairs import RetrievalResult, names_under, retrieval_pairs

if TYPE_CHECKING:  # the CLI imports this module before any model: torch loads only when a model does
    from .models.base import Extractor

PAIR_MODES = ("exhaustive", "sequential", "retrieval")


@dataclass(frozen=True)
class RetrievalSettings:
    """How retrieval pairs (:func:`lightmatch.retrieval.pairs.retrieval_pairs`).

    Attributes:
        num_matched: the retrieval mode's K, images retrieved per image (per query); None: :data:`NUM_MATCHED`.
        sequential_k: the sequential mode's K, retrieved images added to each image's window (None: no retrieval).
        query_dir, db_dir: localisation: pair each image of ``query_dir`` with its K nearest images of ``db_dir``
            (folders under the image folder, both or neither).
        codebook: VLAD codebook file (used when it exists, else learned and saved there; default beside the store).
        global_features: a user's hloc ``global-feats.h5``: no extraction, no codebook.
        search: top-K search, ``exact`` or ``faiss``.
    """

    num_matched: Optional[int] = None
    sequential_k: Optional[int] = None
    query_dir: Optional[str] = None
    db_dir: Optional[str] = None
    codebook: Optional[str] = None
    global_features: Optional[str] = None
    search: str = "exact"

    def __post_init__(self) -> None:
        for name in ("num_matched", "sequential_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"retrieval: {name} must be >= 1, got {value}")
        if (self.query_dir is None) != (self.db_dir is None):
            raise ConfigError("retrieval: query_dir and db_dir go together")
        if self.codebook is not None and self.global_features is not None:
            raise ConfigError("retrieval: a codebook is for our VLAD descriptors; global_features replaces them")

    def given(self) -> set[str]:
        """The names of the settings not at their defaults."""
        default = RetrievalSettings()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}


@dataclass(frozen=True)
class PairSource:
    """The pairs of the images under ``image_dir``: those of ``pairs_file`` (an hloc pairs file, ``-`` for standard
    input; names relative to ``image_dir``), or, with ``mode`` instead, the images paired ``exhaustive``-ly,
    ``sequential``-ly (each with the next ``window``, default :data:`SEQUENTIAL_WINDOW`; ``loop`` closes the
    sequence; ``retrieval.sequential_k`` adds retrieved images) or by ``retrieval``."""

    image_dir: str
    pairs_file: Optional[str] = None
    mode: Optional[str] = None
    window: Optional[int] = None
    loop: bool = False
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)

    def __post_init__(self) -> None:
        if (self.pairs_file is None) == (self.mode is None):
            raise ConfigError("pairs: give either a pairs file or a pairing mode "
                              f"({', '.join(PAIR_MODES)}), not {'both' if self.mode else 'neither'}")
        if self.mode is not None and self.mode not in PAIR_MODES:
            raise ConfigError(f"pairs: unknown mode '{self.mode}': choose from {', '.join(PAIR_MODES)}")
        if (self.window is not None or self.loop) and self.mode != "sequential":
            raise ConfigError("pairs: a window and a loop are for the sequential mode")
        if self.window is not None and self.window < 1:
            raise ConfigError(f"pairs: the sequential window must be >= 1, got {self.window}")
        if self.mode == "retrieval":
            allowed = {f.name for f in fields(RetrievalSettings)} - {"sequential_k"}
        elif self.mode == "sequential" and self.retrieval.sequential_k is not None:
            allowed = {"sequential_k", "codebook", "global_features", "search"}
        else:
            allowed = set()
        extra = sorted(self.retrieval.given() - allowed)
        if extra:
            raise ConfigError(f"pairs: the retrieval setting {extra[0]} does not go with "
                              f"{'a pairs file' if self.mode is None else 'the ' + self.mode + ' mode'}")

    @property
    def retrieved_per_image(self) -> Optional[int]:
        """K, the images retrieval pairs with each image; None when no retrieval is involved."""
        if self.mode == "retrieval":
            return self.retrieval.num_matched or NUM_MATCHED
        return self.retrieval.sequential_k if self.mode == "sequential" else None

    @property
    def needs_extractor(self) -> bool:
        """Whether :func:`source_pairs` extracts local features (retrieval by our VLAD descriptors)."""
        return self.retrieved_per_image is not None and self.retrieval.global_features is None


@dataclass
class SourcedPairs:
    """What :func:`source_pairs` found: the pairs, and with retrieval its result (vectors, failed images)."""

    pairs: list[Pair]
    retrieval: Optional[RetrievalResult] = None

    @property
    def failed_images(self) -> dict[str, str]:
        """Images left out because they could not be read (retrieval extracts them), name -> reason."""
        return dict(self.retrieval.failed_images) if self.retrieval is not None else {}


def source_pairs(source: PairSource, store_dir: Optional[str | os.PathLike] = None,
                 extractor: Optional[Extractor] = None, names: Optional[Sequence[str]] = None, workers: int = 2,
                 on_event: Optional[EventCallback] = None) -> SourcedPairs:
    """The pairs of ``source``.

    Args:
        source: where the pairs come from.
        store_dir: retrieval's folder (``features.h5``, ``global-feats.h5``, ``codebook.npz``, reused by a later
            batch into it); None: a temporary folder, gone on return.
        extractor: the local features retrieval aggregates (:attr:`PairSource.needs_extractor`); unused otherwise.
        names: the images to pair (default: every image under ``source.image_dir``, sorted); unused with a pairs
            file or query and database folders.
        workers, on_event: retrieval's extraction, as :func:`lightmatch.pipeline.batch.extract_batch`.

    Raises:
        InputError: no image folder, an unreadable pairs file, or a query/database folder not in the image folder.
        ConfigError: retrieval by our descriptors without an ``extractor``.
    """
    image_dir = Path(source.image_dir)
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    if source.pairs_file is not None:
        return SourcedPairs(read_pairs(source.pairs_file, image_dir))
    k = source.retrieved_per_image
    window = source.window or SEQUENTIAL_WINDOW
    if k is None:
        names = list(names) if names is not None else list_images(image_dir)
        if source.mode == "sequential":
            return SourcedPairs(sequential_pairs(names, window, source.loop))
        return SourcedPairs(exhaustive_pairs(names))
    if source.needs_extractor and extractor is None:
        raise ConfigError("retrieval pairs need an extractor (or a user's global features)")
    settings, queries = source.retrieval, None
    if settings.query_dir is not None:
        for folder in (settings.query_dir, settings.db_dir):
            if not (image_dir / folder).is_dir():
                raise InputError(f"{folder}: no such folder under {image_dir}")
        names, queries = names_under(image_dir, settings.db_dir), names_under(image_dir, settings.query_dir)
    with contextlib.ExitStack() as stack:
        if store_dir is None:
            store_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lightmatch-"))
        found = retrieval_pairs(image_dir, store_dir, extractor, k,
                                names=names if names is not None else list_images(image_dir), query_names=queries,
                                window=window if source.mode == "sequential" else None, loop=source.loop,
                                codebook=settings.codebook, global_features=settings.global_features,
                                backend=settings.search, workers=workers, on_event=on_event)
    return SourcedPairs(found.pairs, found)
