"""Retrieval options shared by ``pairs`` and ``match`` (``--mode retrieval``, ``--pairs-mode retrieval``, the hybrid
``--retrieval K`` of a sequential mode), and the step that turns them into pairs."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Optional

import click

from ..retrieval.pairs import NUM_MATCHED
from .common import ExistingPath

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


def wants_retrieval(mode: Optional[str], retrieval: dict) -> bool:
    """Check the retrieval options against the pairing ``mode``; True when pairs come from retrieval."""
    given = {k for k, v in retrieval.items() if v is not None and not (k == "search" and v == "exact")}
    if retrieval["retrieval"] is not None and mode != "sequential":
        raise click.UsageError("--retrieval K adds retrieval to a sequential mode; use --num-matched K with the "
                               "retrieval mode")
    if mode == "sequential" and retrieval["retrieval"] is not None:
        extra = given - {"retrieval", "codebook", "global_features", "search"}
        if extra:
            raise click.UsageError(f"{OPTION_NAMES[sorted(extra)[0]]} goes with the retrieval mode")
        return True
    if mode != "retrieval":
        if given:
            raise click.UsageError(f"{OPTION_NAMES[sorted(given)[0]]} needs the retrieval mode (or --retrieval K "
                                   "with the sequential mode)")
        return False
    if (retrieval["query_dir"] is None) != (retrieval["db_dir"] is None):
        raise click.UsageError("--query-dir and --db-dir go together")
    if retrieval["codebook"] is not None and retrieval["global_features"] is not None:
        raise click.UsageError("--codebook is for our VLAD descriptors; --global-features replaces them")
    return True


def retrieval_pairs_for(image_dir: str, store_dir: Optional[str], mode: str, window: Optional[int], loop: bool,
                        retrieval: dict, spec: Any, quiet: bool, workers: int):
    """Run retrieval (extraction into ``store_dir`` when needed, by the extractor of ``spec``, a
    :class:`~lightmatch.pipeline.spec.ModelSpec`; progress on stderr) and return its
    :class:`~lightmatch.retrieval.pairs.RetrievalResult`; ``store_dir`` None: a temporary folder."""
    from ..errors import InputError
    from ..io.pairs import list_images
    from ..retrieval.pairs import names_under, retrieval_pairs
    from .common import extractor_spec
    from .reporter import Reporter

    if spec.rotation_search:
        raise click.UsageError("--rotation-search does not go with retrieval pairs (their features are upright)")
    if not Path(image_dir).is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    names, queries = None, None
    if retrieval["query_dir"] is not None:
        for key in ("query_dir", "db_dir"):
            if not (Path(image_dir) / retrieval[key]).is_dir():
                raise click.BadParameter(f"{retrieval[key]}: no such folder under {image_dir}",
                                         param_hint=OPTION_NAMES[key])
        names, queries = names_under(image_dir, retrieval["db_dir"]), names_under(image_dir, retrieval["query_dir"])
    k = retrieval["retrieval"] if mode == "sequential" else (retrieval["num_matched"] or NUM_MATCHED)
    extractor = None
    if retrieval["global_features"] is None:  # the extractor exactly as `match` builds it (matcher unused)
        extractor = extractor_spec(spec).load()[0]
    reporter = Reporter(False, quiet, "image")
    with contextlib.ExitStack() as stack:
        if store_dir is None:
            store_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lightmatch-"))
        try:
            result = retrieval_pairs(image_dir, store_dir, extractor, k,
                                     names=names if names is not None else list_images(image_dir),
                                     query_names=queries, window=window if mode == "sequential" else None,
                                     loop=loop, codebook=retrieval["codebook"],
                                     global_features=retrieval["global_features"], backend=retrieval["search"],
                                     workers=workers, on_event=reporter)
        finally:
            reporter.close()
    return result


def describe(result: Any) -> str:
    """One line on what retrieval did, for stderr."""
    text = f"retrieval: {len(result.pairs)} pairs among {len(result.images)} images"
    if result.failed_images:
        text += f" ({len(result.failed_images)} unreadable image(s) left out)"
    return text
