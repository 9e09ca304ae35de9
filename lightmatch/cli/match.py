"""``lightmatch match`` (one pair, or batches from folders, pairs files and stdin), ``extract``, ``pairs`` and
``export colmap``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import click

from .common import (EXIT_OK, EXIT_PARTIAL, build_models, extractor_options, format_pair_text, main,
                     matcher_options)

EXIT_INTERRUPTED = 130
PAIR_MODES = ("exhaustive", "sequential")
VERIFY_MODELS = ("homography", "fundamental", "essential")


# ----------------------------------------------------------------------------------------------- helpers ---

class _Reporter:
    """Turns batch events into a tqdm bar and warnings on stderr and, with ``--json``, JSON lines on stdout."""

    def __init__(self, as_json: bool, quiet: bool, unit: str) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.unit = unit
        self.bar = None
        self.failed_images: set[str] = set()
        self.stdout_open = True

    def __call__(self, event) -> None:
        from ..pipeline.batch import BatchStart, ImageEvent, PairEvent

        if isinstance(event, BatchStart):
            for path in event.removed:
                self.warn(f"--overwrite: removed {path}")
            total = event.pairs_todo if self.unit == "pair" else event.images_todo
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit=self.unit, dynamic_ncols=True, leave=False,
                            disable=self.quiet or not sys.stderr.isatty())
            return
        if isinstance(event, ImageEvent):
            if event.status == "failed":
                self.failed_images.add(event.name)
                self.warn(f"{event.error} (image skipped)")
            if self.unit == "image" and event.status in ("extracted", "failed"):
                self.bar.update(1)
            if event.status == "failed" or self.unit == "image":  # match: only failures get an image line
                self.emit(event.to_json())
        elif isinstance(event, PairEvent):
            if event.status == "failed" and not {event.name0, event.name1} & self.failed_images:
                self.warn(f"pair {event.name0} {event.name1} failed: {event.error}")
            for warning in event.warnings:
                self.warn(warning)
            if event.status in ("ok", "failed"):
                self.bar.update(1)
            self.emit(event.to_json())

    def emit(self, obj: dict) -> None:
        if not self.as_json or not self.stdout_open:
            return
        try:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (e.g. `| head`): keep working, stop printing
            self.stdout_open = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())

    def warn(self, message: str) -> None:
        line = f"lightmatch: warning: {message}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_batch_summary(summary) -> str:
    """Human-readable lines for a :class:`~lightmatch.pipeline.batch.BatchSummary`."""
    t = summary.times
    lines = []
    if summary.command == "match":
        lines.append(f"pairs: {summary.pairs_matched} matched, {summary.pairs_skipped} already done, "
                     f"{summary.pairs_failed} failed" + (f", {summary.pairs_ignored} ignored (self-pairs or "
                                                         "repeats)" if summary.pairs_ignored else "")
                     + f" of {summary.pairs_total}; {summary.pairs_per_s:.2f} pairs/s")
    lines.append(f"images: {summary.images_extracted} extracted, {summary.images_reused} "
                 f"{'read back' if summary.command == 'match' else 'already done'}, {summary.images_failed} failed"
                 f" of {summary.images_total}; {summary.images_per_s:.2f} images/s")
    lines.append(f"time: {summary.elapsed_s:.1f} s total; decode {t['decode']:.1f} s (in {summary.workers} "
                 f"background workers, waited {t['wait']:.1f} s), extract {t['extract']:.1f} s, "
                 f"read {t['read']:.1f} s, match {t['match']:.1f} s, verify {t['verify']:.1f} s, "
                 f"viz {t['viz']:.1f} s, write {t['write']:.1f} s, consolidate {t['consolidate']:.1f} s")
    outputs = [p for p in (summary.features_path, summary.matches_path) if p]
    if outputs:
        lines.append("output: " + ", ".join(outputs))
    return "\n".join(lines)


def _finish(summary, reporter: _Reporter, as_json: bool, quiet: bool) -> None:
    reporter.close()
    if as_json:
        reporter.emit(summary.to_json())
    elif not quiet:
        click.echo(format_batch_summary(summary))
    if summary.interrupted:
        click.echo("lightmatch: interrupted; the work done is saved, rerun the same command to finish", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if not summary.ok:
        what = []
        if summary.images_failed:
            what.append(f"{summary.images_failed} image(s) could not be used")
        if summary.pairs_failed:
            what.append(f"{summary.pairs_failed} pair(s) failed")
        click.echo(f"lightmatch: {', '.join(what)}", err=True)
        sys.exit(EXIT_PARTIAL)
    sys.exit(EXIT_OK)


@contextlib.contextmanager
def _batch_run():
    """While a batch runs: ``kill PID`` stops it like Ctrl-C (the work done is saved), and OpenCV's own decoder
    warnings are muted (bad images are reported once, by us). Both are restored afterwards."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread
        previous = None
    try:
        import cv2

        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):
        level = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if level is not None:
            cv2.utils.logging.setLogLevel(level)


def batch_options(func):
    """Options of the batch forms of ``match`` and of ``extract``."""
    options = [
        click.option("--overwrite", is_flag=True,
                     help="Discard OUTDIR's features.h5 and matches.h5 and start afresh (default: resume, skipping "
                          "the images and pairs already there)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary text (warnings remain)."),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Background threads decoding and resizing images ahead of the network."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# -------------------------------------------------------------------------------------------------- match ---

@main.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for features.h5 and matches.h5 (hloc layout).")
@click.option("--viz", "viz_path", type=click.Path(dir_okay=False), default=None,
              help="Two-image form: write a match plot (PNG), matches coloured by confidence.")
@click.option("--homography", type=click.Path(dir_okay=False), default=None,
              help="Two-image form: ground-truth 3x3 homography (text) image0 -> image1: report matches correct "
                   "within 3 px.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per pair on stdout (batches: then a final summary line).")
@click.option("--image-dir", type=click.Path(file_okay=False), default=None,
              help="Batch form: root of the images; pair names are relative to it.")
@click.option("--pairs", "pairs_file", default=None, metavar="FILE|-",
              help="Batch: pairs file ('name0 name1' lines, names relative to --image-dir), '-' for stdin.")
@click.option("--pairs-mode", type=click.Choice(PAIR_MODES), default=None,
              help="Batch: pair the images of --image-dir (recursively, sorted by name) instead of --pairs.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="--pairs-mode sequential: pair each image with the next K.  [default: 5]")
@click.option("--loop", is_flag=True, help="--pairs-mode sequential: the sequence is closed (last pairs with first).")
@click.option("--verify", type=click.Choice(VERIFY_MODELS), default=None,
              help="Batch: verify matches with a robust model (MAGSAC++) and store 'inliers' beside them.")
@click.option("--verify-threshold", type=float, default=None, help="Inlier threshold in pixels.  [default: 3.0]")
@click.option("--verify-confidence", type=float, default=None, help="RANSAC confidence.  [default: 0.9999]")
@click.option("--seed", type=int, default=None, help="RANSAC random seed (same seed, same inliers).  [default: 0]")
@click.option("--rotation-search", is_flag=True,
              help="Two-image form: match IMAGE1 at 0/90/180/270 degrees, keep the rotation with most verified "
                   "inliers (4x the extraction and matching of IMAGE1; see also --features aliked-n16rot).")
@click.option("--viz-dir", type=click.Path(file_okay=False), default=None,
              help="Batch: write a match plot per pair matched in this run ({name0}_{name1}_matches.png).")
@batch_options
@extractor_options
@matcher_options
def match(images: tuple[str, ...], output_dir: Optional[str], viz_path: Optional[str], homography: Optional[str],
          as_json: bool, image_dir: Optional[str], pairs_file: Optional[str], pairs_mode: Optional[str],
          window: Optional[int], loop: bool, verify: Optional[str], verify_threshold: Optional[float],
          verify_confidence: Optional[float], seed: Optional[int], rotation_search: bool, viz_dir: Optional[str],
          overwrite: bool,
          quiet: bool, workers: int, **opts: Any) -> None:
    """Match IMAGE0 and IMAGE1, or every pair of a folder.

    \b
    lightmatch match a.jpg b.jpg -o out --viz out/matches.png
    lightmatch match --image-dir imgs --pairs pairs.txt -o out
    lightmatch pairs imgs | lightmatch match --image-dir imgs --pairs - -o out --json
    lightmatch match --image-dir imgs --pairs-mode sequential --window 5 -o out --viz-dir out/viz
    lightmatch match --image-dir imgs --pairs-mode exhaustive -o out --verify fundamental

    Batches extract each image once, resume where a previous (even killed) run stopped, and skip unreadable
    images. Exit status: 0 all pairs matched, 3 some images or pairs failed, 2 usage error, 1 error.
    """
    if verify is None:
        for name, value in (("--verify-threshold", verify_threshold), ("--verify-confidence", verify_confidence),
                            ("--seed", seed)):
            if value is not None:
                raise click.UsageError(f"{name} needs --verify")
    if image_dir is None:
        batch_only = {"--pairs": pairs_file, "--pairs-mode": pairs_mode, "--window": window, "--loop": loop,
                      "--verify": verify, "--viz-dir": viz_dir, "--overwrite": overwrite}
        given = [name for name, value in batch_only.items() if value not in (None, False)]
        if given:
            raise click.UsageError(f"{given[0]} needs --image-dir (the batch form)")
        _match_two(images, output_dir, viz_path, homography, as_json, opts, rotation_search)
        return
    if images:
        raise click.UsageError("give either IMAGE0 IMAGE1 or --image-dir, not both")
    if rotation_search:
        raise click.UsageError("--rotation-search is for two images (IMAGE0 IMAGE1)")
    for name, value in (("--viz", viz_path), ("--homography", homography)):
        if value is not None:
            raise click.UsageError(f"{name} is for two images; batches take --viz-dir")
    if output_dir is None and not (viz_dir or as_json):
        raise click.UsageError("batches need an output folder: -o OUTDIR (or --viz-dir / --json to only look)")
    if (pairs_file is None) == (pairs_mode is None):
        raise click.UsageError("give the pairs: --pairs FILE (or - for stdin) or --pairs-mode exhaustive|sequential")
    if (window is not None or loop) and pairs_mode != "sequential":
        raise click.UsageError("--window and --loop go with --pairs-mode sequential")

    from ..pipeline.batch import VerifyOptions, match_batch

    pairs = _pairs_for(image_dir, pairs_file, pairs_mode, window, loop)
    verify_options = None
    if verify is not None:
        verify_options = VerifyOptions(verify, 3.0 if verify_threshold is None else verify_threshold,
                                       0.9999 if verify_confidence is None else verify_confidence,
                                       0 if seed is None else seed)
    if not pairs:
        click.echo(f"lightmatch: warning: no pairs to match (found no images in {image_dir})"
                   if pairs_mode else f"lightmatch: warning: no pairs in {pairs_file}", err=True)
    extractor, matcher = build_models(opts)
    reporter = _Reporter(as_json, quiet, "pair")
    temporary = output_dir is None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_batch_run())
        if temporary:  # only plots / JSON wanted: the stores live in a temporary folder
            output_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="lightmatch-"))
            if not quiet:
                click.echo("lightmatch: note: no -o OUTDIR, features and matches are not kept", err=True)
        try:
            summary = match_batch(image_dir, pairs, output_dir, extractor, matcher, verify=verify_options,
                                  viz_dir=viz_dir, overwrite=overwrite, workers=workers, on_event=reporter)
        finally:
            reporter.close()
        if temporary:  # the stores are gone after this block
            summary.features_path = summary.matches_path = None
    _finish(summary, reporter, as_json, quiet)


def _match_two(images: tuple[str, ...], output_dir: Optional[str], viz_path: Optional[str],
               homography: Optional[str], as_json: bool, opts: dict, rotation_search: bool = False) -> None:
    from ..pipeline.match import check_inputs, match_pair, read_homography

    if len(images) != 2:
        raise click.UsageError("give exactly two images (IMAGE0 IMAGE1), or --image-dir for a batch")
    H = read_homography(homography) if homography else None
    check_inputs(list(images), output_dir)
    extractor, matcher = build_models(opts)
    result = match_pair(images[0], images[1], extractor, matcher, output_dir=output_dir, viz_path=viz_path,
                        homography=H, rotation_search=rotation_search)
    for warning in result.warnings:
        click.echo(f"lightmatch: warning: {warning}", err=True)
    summary = result.summary()
    click.echo(json.dumps(summary) if as_json else format_pair_text(summary))


def _pairs_for(image_dir: str, pairs_file: Optional[str], mode: Optional[str], window: Optional[int],
               loop: bool) -> list[tuple[str, str]]:
    from ..errors import InputError
    from ..io.pairs import exhaustive_pairs, list_images, read_pairs, sequential_pairs

    if not Path(image_dir).is_dir():
        raise InputError(f"{image_dir}: no such image directory")
    if pairs_file is not None:
        return read_pairs(pairs_file)
    names = list_images(image_dir)
    if mode == "sequential":
        return sequential_pairs(names, window or 5, loop)
    return exhaustive_pairs(names)


# ------------------------------------------------------------------------------------------------- pairs ---

@main.command("pairs")
@click.argument("image_dir", type=click.Path(file_okay=False))
@click.option("--mode", type=click.Choice(PAIR_MODES), default="exhaustive", show_default=True,
              help="exhaustive: every pair; sequential: each image with the next --window images (sorted names).")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="--mode sequential: pair each image with the next K.  [default: 5]")
@click.option("--loop", is_flag=True, help="--mode sequential: the sequence is closed (last pairs with first).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the pairs file here (default: stdout).")
def pairs_command(image_dir: str, mode: str, window: Optional[int], loop: bool, output: Optional[str]) -> None:
    """List image pairs of IMAGE_DIR (recursive) as an hloc pairs file: one 'name0 name1' line per pair.

    \b
    lightmatch pairs imgs --mode sequential --window 3 -o pairs.txt
    lightmatch pairs imgs | lightmatch match --image-dir imgs --pairs - -o out
    """
    from ..io.pairs import format_pairs, write_pairs

    if (window is not None or loop) and mode != "sequential":
        raise click.UsageError("--window and --loop go with --mode sequential")
    pairs = _pairs_for(image_dir, None, mode, window, loop)
    if not pairs:
        click.echo(f"lightmatch: warning: no pairs (found fewer than two images in {image_dir})", err=True)
    if output is not None:
        write_pairs(output, pairs)
        return
    try:
        sys.stdout.write(format_pairs(pairs))
        sys.stdout.flush()
    except BrokenPipeError:  # `lightmatch pairs D | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# ----------------------------------------------------------------------------------------------- extract ---

@main.command()
@click.argument("image_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for features.h5 (hloc layout).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image on stdout, then a summary line.")
@batch_options
@extractor_options
def extract(image_dir: str, output_dir: str, as_json: bool, overwrite: bool, quiet: bool, workers: int,
            **opts: Any) -> None:
    """Extract features of every image under IMAGE_DIR (recursive) into OUTDIR/features.h5.

    \b
    lightmatch extract imgs -o out --features aliked --max-keypoints 2048

    Images already in features.h5 are skipped (--overwrite discards it, and matches.h5, whose matches index
    the old keypoints). Unreadable files are reported and skipped (exit status 3).
    """
    from ..io.pairs import list_images
    from ..pipeline.batch import extract_batch

    names = list_images(image_dir)
    if not names:
        click.echo(f"lightmatch: warning: no images found in {image_dir}", err=True)
    # the extractor exactly as `match` builds it; the nearest-neighbour matcher is free and unused
    extractor, _ = build_models(dict(opts, matcher="nn"))
    reporter = _Reporter(as_json, quiet, "image")
    try:
        with _batch_run():
            summary = extract_batch(image_dir, names, output_dir, extractor, overwrite=overwrite, workers=workers,
                                    on_event=reporter)
    finally:
        reporter.close()
    _finish(summary, reporter, as_json, quiet)


# ------------------------------------------------------------------------------------------------ export ---

@main.group()
def export() -> None:
    """Export features and matches to other tools."""


@export.command("colmap")
@click.option("--image-dir", type=click.Path(file_okay=False), required=True, help="Root of the images.")
@click.option("--features", "features_path", type=click.Path(dir_okay=False), required=True,
              help="features.h5 (hloc layout).")
@click.option("--matches", "matches_path", type=click.Path(dir_okay=False), required=True,
              help="matches.h5 (hloc layout); pairs with 'inliers' (match --verify) become verified geometries.")
@click.option("--database", type=click.Path(dir_okay=False), required=True,
              help="COLMAP database to write (replaced if it exists).")
@click.option("--pairs", "pairs_file", default=None, metavar="FILE|-",
              help="Only these pairs (file, '-' for stdin); default: all.")
@click.option("--camera-model", default="SIMPLE_RADIAL", show_default=True,
              type=click.Choice(["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE",
                                 "FULL_OPENCV", "FOV", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE",
                                 "THIN_PRISM_FISHEYE", "RAD_TAN_THIN_PRISM_FISHEYE"]),
              help="COLMAP camera model, initialised with focal 1.2 * max(W, H).")
@click.option("--single-camera", is_flag=True, help="One camera shared by all images (same size).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
def export_colmap_command(image_dir: str, features_path: str, matches_path: str, database: str,
                          pairs_file: Optional[str], camera_model: str, single_camera: bool, as_json: bool) -> None:
    """Write a COLMAP database for `colmap mapper` / pycolmap.incremental_mapping.

    \b
    lightmatch match --image-dir imgs --pairs-mode exhaustive --verify fundamental -o out
    lightmatch export colmap --image-dir imgs --features out/features.h5 --matches out/matches.h5 \\
        --database out/database.db
    """
    from ..io.colmap import export_colmap
    from ..pipeline.batch import PARTS_DIR

    for path in (features_path, matches_path):
        parts = Path(path).parent / PARTS_DIR
        if parts.is_dir() and any(p.suffix == ".h5" for p in parts.iterdir()):
            click.echo(f"lightmatch: warning: {parts} holds results of an interrupted run that are not in "
                       f"{path} yet; rerun that command to finish it", err=True)
            break
    result = export_colmap(image_dir, features_path, matches_path, database, pairs=pairs_file,
                           camera_model=camera_model, single_camera=single_camera)
    if as_json:
        click.echo(json.dumps({"type": "export", **result.__dict__}))
    else:
        click.echo(f"{result.database}: {result.num_images} images, {result.num_cameras} cameras, "
                   f"{result.num_pairs} pairs ({result.num_verified_pairs} verified), {result.num_matches} matches "
                   f"({result.num_inlier_matches} inliers)")
