"""Retrieval options shared by ``pairs`` and ``match`` (``--mode retrieval``, ``--pairs-mode retrieval``, the hybrid
``--retrieval K`` of a sequential mode), and the step that turns them into pairs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from ..defaults import NUM_MATCHED
from .common import ExistingPath

if TYPE_CHECKING:  # imported when used: `lightmatch --help` and usage errors start without torch
    from ..pair_sources import PairSource, RetrievalSettings, SourcedPairs
    from ..retrieval.pairs import RetrievalResult

MAX_NUM_MATCHED = 10000  # neighbours per image: the top-K table holds n * K entries
NUM_MATCHED_RANGE = click.IntRange(1, MAX_NUM_MATCHED)

RETRIEVAL_KEYS = ("num_matched", "retrieval", "query_dir", "db_dir", "codebook", "global_features", "search")
OPTION_NAMES = {"num_matched": "--num-matched", "retrieval": "--retrieval", "query_dir": "--query-dir",
                "db_dir": "--db-dir", "codebook": "--codebook", "global_features": "--global-features",
                "search": "--search"}


def retrieval_options(func):
    """Options of retrieval pairing."""
    options = [
        click.option("--num-matched", type=NUM_MATCHED_RANGE, default=None,
                     help=f"Retrieval: pair each image (each query) with its K most similar images.  "
                          f"[default: {NUM_MATCHED}]"),
        click.option("--retrieval", type=NUM_MATCHED_RANGE, default=None, metavar="K",
                     help="Sequential mode: add each image's K most similar images to its window (loop closures)."),
        click.option("--query-dir", type=click.Path(file_okay=False), default=None,
                     help="Retrieval for localisation: the query images (a folder under the image folder); each is "
                          "paired with its K nearest --db-dir images."),
        click.option("--db-dir", type=click.Path(file_okay=False), default=None,
                     help="Retrieval for localisation: the database images (a folder under the image folder)."),
        click.option("--codebook", type=click.Path(dir_okay=False), default=None,
                     help="Retrieval: VLAD codebook (.npz): used when the file exists, else learned from the "
                          "images' features and saved there.  [default: codebook.npz beside features.h5]"),
        click.option("--global-features", type=ExistingPath("global features file", dir_okay=False), default=None,
                     help="Retrieval: your own hloc global-feats.h5 (NetVLAD, MegaLoc, ...) instead of our VLAD; "
                          "nothing is extracted for retrieval."),
        click.option("--search", type=click.Choice(["exact", "faiss"]), default="exact", show_default=True,
                     help="Retrieval top-K: exact chunked products, or faiss's exact index (extra "
                          "lightmatch[faiss]; docs/reconstruction.md)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def pop_retrieval_options(opts: dict) -> dict:
    """Take the retrieval options out of a command's ``**opts``."""
    return {key: opts.pop(key, None) for key in RETRIEVAL_KEYS}


def retrieval_settings(mode: Optional[str], retrieval: dict) -> RetrievalSettings:
    """The :class:`~lightmatch.pair_sources.RetrievalSettings` of the retrieval options, checked against the
    pairing ``mode`` (a usage error naming the option that does not go with it)."""
    from ..pair_sources import RetrievalSettings

    given = {k for k, v in retrieval.items() if v is not None and not (k == "search" and v == "exact")}
    if retrieval["retrieval"] is not None and mode != "sequential":
        raise click.UsageError("--retrieval K adds retrieval to a sequential mode; use --num-matched K with the "
                               "retrieval mode")
    if mode == "sequential" and retrieval["retrieval"] is not None:
        extra = given - {"retrieval", "codebook", "global_features", "search"}
        if extra:
            raise click.UsageError(f"{OPTION_NAMES[sorted(extra)[0]]} goes with the retrieval mode")
    elif mode != "retrieval" and given:
        raise click.UsageError(f"{OPTION_NAMES[sorted(given)[0]]} needs the retrieval mode (or --retrieval K "
                               "with the sequential mode)")
    if (retrieval["query_dir"] is None) != (retrieval["db_dir"] is None):
        raise click.UsageError("--query-dir and --db-dir go together")
    if retrieval["codebook"] is not None and retrieval["global_features"] is not None:
        raise click.UsageError("--codebook is for our VLAD descriptors; --global-features replaces them")
    return RetrievalSettings(num_matched=retrieval["num_matched"], sequential_k=retrieval["retrieval"],
                             query_dir=retrieval["query_dir"], db_dir=retrieval["db_dir"],
                             codebook=retrieval["codebook"], global_features=retrieval["global_features"],
                             search=retrieval["search"] or "exact")


def pairs_of(source: PairSource, store_dir: Optional[str], spec: Any, quiet: bool, workers: int) -> SourcedPairs:
    """The pairs of ``source`` (:func:`~lightmatch.pair_sources.source_pairs`); retrieval extracts by the
    extractor of ``spec`` (a :class:`~lightmatch.pipeline.spec.ModelSpec`) into ``store_dir`` (None: a temporary
    folder) with progress and a closing line on stderr."""
    from ..pair_sources import source_pairs
    from .common import extractor_spec
    from .reporter import Reporter

    if source.retrieved_per_image is None:
        return source_pairs(source)
    if spec.rotation_search:
        raise click.UsageError("--rotation-search does not go with retrieval pairs (their features are upright)")
    settings = source.retrieval
    if settings.query_dir is not None:
        for key in ("query_dir", "db_dir"):
            if not (Path(source.image_dir) / getattr(settings, key)).is_dir():
                raise click.BadParameter(f"{getattr(settings, key)}: no such folder under {source.image_dir}",
                                         param_hint=OPTION_NAMES[key])
    # the extractor exactly as `match` builds it (matcher unused)
    extractor = extractor_spec(spec).load()[0] if source.needs_extractor else None
    reporter = Reporter(False, quiet, "image")
    try:
        found = source_pairs(source, store_dir, extractor, workers=workers, on_event=reporter)
    finally:
        reporter.close()
    if not quiet:
        click.echo(f"lightmatch: {describe(found.retrieval)}", err=True)
    return found


def describe(result: RetrievalResult) -> str:
    """One line on what retrieval did, for stderr."""
    text = f"retrieval: {len(result.pairs)} pairs among {len(result.images)} images"
    if result.failed_images:
        text += f" ({len(result.failed_images)} unreadable image(s) left out)"
    return text
