"""``lightmatch match`` (one pair, or batches from folders, pairs files and stdin), ``extract``, ``pairs`` and
``export colmap``."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from typing import Any, Optional

import click

from ..defaults import (
    BATCH_PAIRS,
    VERIFY_CONFIDENCE,
    VERIFY_ESTIMATOR,
    VERIFY_SEED,
    VERIFY_THRESHOLD_PX,
    VIZ_MAX_MATCHES,
)
from ..presets import apply_preset_split
from .common import (
    ESTIMATOR_CHOICES,
    EXIT_OK,
    EXIT_PARTIAL,
    SEED,
    ExistingPath,
    FiniteFloatRange,
    extractor_options,
    extractor_spec,
    given_options,
    main,
    matcher_options,
    model_spec,
    option_group,
    plot_path,
    preset_option,
)
from .reporter import Reporter
from .retrieval import pairs_of, pop_retrieval_options, retrieval_options, retrieval_settings

EXIT_INTERRUPTED = 130
MAX_WORKERS = 64  # decoding threads, each holding images ahead of the network
MAX_RAY_WORKERS = 1024  # actors, each holding a loaded model
MAX_BATCH_PAIRS = 64  # pairs padded into one matcher call (its memory grows with them)
PAIR_MODES = ("exhaustive", "sequential", "retrieval")
VERIFY_MODELS = ("homography", "fundamental", "essential")


# ----------------------------------------------------------------------------------------------- helpers ---

def format_pair_text(line: dict, model: str) -> str:
    """Human-readable lines for one pair's JSON line (:meth:`lightmatch.pipeline.events.PairEvent.to_json`)."""
    text = f"matches: {line['matches']}"
    if "correct" in line:
        text += f" (correct within 3 px: {line['correct']})"
    if "inliers" in line:
        text += f", inliers {line['inliers']}"
    if line.get("stop_layer") and line.get("layers"):
        text += f"; stopped at layer {line['stop_layer']} of {line['layers']}"
    turn = ([f"rotation search: {line['image1']} matched turned by {line['rotation_degrees']} degrees "
             "(counter-clockwise); keypoints of that turn"] if "rotation_degrees" in line else [])
    return "\n".join([model, f"{line['image0']}: {line['keypoints0']} keypoints",
                      f"{line['image1']}: {line['keypoints1']} keypoints", *turn, text,
                      "time: " + ", ".join(f"{k} {v:.0f} ms" for k, v in line.get("timings_ms", {}).items())])


def format_batch_summary(summary) -> str:
    """Human-readable lines for a :class:`~lightmatch.pipeline.events.BatchSummary`."""
    t = summary.times
    lines = [f"model: {summary.extractor}" + (f" + {summary.matcher}" if summary.matcher else "")]
    if summary.command == "match":
        lines.append(f"pairs: {summary.pairs_matched} matched, {summary.pairs_skipped} already done, "
                     f"{summary.pairs_failed} failed" + (f", {summary.pairs_ignored} ignored (self-pairs or "
                                                         "repeats)" if summary.pairs_ignored else "")
                     + f" of {summary.pairs_total}; {summary.pairs_per_s:.2f} pairs/s")
    lines.append(f"images: {summary.images_extracted} extracted, {summary.images_reused} "
                 f"{'read back' if summary.command == 'match' else 'already done'}, {summary.images_failed} failed"
                 f" of {summary.images_total}; {summary.images_per_s:.2f} images/s")
    if summary.pairs_verified:
        lines.append(f"inliers: {summary.inliers} in {summary.pairs_verified} verified pairs "
                     f"({summary.inliers / summary.pairs_verified:.1f} per pair)")
    stages = ", ".join(f"{key} {t.get(key, 0.0):.1f} s" for key in summary.time_keys if key not in ("decode", "wait"))
    lines.append(f"time: {summary.elapsed_s:.1f} s total; decode {t['decode']:.1f} s (in {summary.workers} "
                 f"background workers, waited {t['wait']:.1f} s), {stages}")
    if summary.per_worker:
        from ..pipeline.events import worker_rate

        lines.append(f"{summary.executor} workers: " + ", ".join(
            f"{name} {s['pairs']:.0f} pairs {s['images']:.0f} images in {s['busy_s']:.1f} s busy"
            + (f" ({worker_rate(s):.2f} pairs/s)" if summary.command == "match" else "")
            for name, s in summary.per_worker.items()))
    outputs = [p for p in (summary.features_path, summary.matches_path) if p]
    if outputs:
        lines.append("output: " + ", ".join(outputs))
    return "\n".join(lines)


def _finish(summary, reporter: Reporter, as_json: bool, quiet: bool) -> None:
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


def _ray_options(batch: dict):
    """The executor options of the ``batch`` group: None for the local executor, else the
    :class:`~lightmatch.pipeline.ray_executor.RayOptions` (a one-line error when Ray is not installed)."""
    executor, address, count, gpus = (batch[k] for k in ("executor", "ray_address", "ray_workers", "worker_gpus"))
    if executor != "ray":
        given = [n for n, v in (("--ray-address", address), ("--ray-workers", count), ("--worker-gpus", gpus))
                 if v is not None]
        if given:
            raise click.UsageError(f"{given[0]} needs --executor ray")
        return None
    from ..pipeline.ray_executor import RayOptions, check_resources, import_ray

    import_ray(embedded=address is None)
    options = RayOptions(address, count, gpus or 0.0)
    check_resources(options)  # before any model loads or the output folder is locked
    return options


def _executor(ray, spec):
    """Where a batch runs: None (this process) or Ray workers building the models of ``spec``."""
    if ray is None:
        return None
    from ..pipeline.ray_executor import RayExecutor

    return RayExecutor(spec, ray)


batch_options = option_group(
    "batch",
    click.option("--overwrite", is_flag=True,
                 help="Discard OUTDIR's features.h5 and matches.h5 and start afresh (default: add to them, skipping "
                      "the images and pairs already there; stores made with other settings are refused)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary text (warnings remain)."),
    click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=2, show_default=True,
                 help="Background threads decoding and resizing images ahead of the network (per Ray worker with "
                      "--executor ray)."),
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="local: this process; ray: Ray worker actors on this machine or a cluster (needs the 'ray' "
                      "extra), same output files."),
    click.option("--ray-address", default=None, metavar="ADDR",
                 help="--executor ray: a running cluster (host:port, or auto); default: start Ray on this machine "
                      "for the run. Only this command reads the images and writes OUTDIR: the workers need no "
                      "shared file system, only the model weights."),
    click.option("--ray-workers", type=click.IntRange(1, MAX_RAY_WORKERS), default=None,
                 help="--executor ray: worker actors, each holding one loaded model.  [default: one per CPU, or "
                      "per --worker-gpus of the GPUs]"),
    click.option("--worker-gpus", type=FiniteFloatRange(min=0), default=None,
                 help="--executor ray: GPUs per worker (0.5: two workers per GPU).  [default: 0]"),
)
"""Options of the batch forms of ``match`` and of ``extract`` (the ``batch`` argument): resume, threads, executor."""

output_options = option_group(
    "output",
    click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), default=None,
                 help="Folder for features.h5 and matches.h5 (hloc layout)."),
    click.option("--viz", "viz_path", type=click.Path(dir_okay=False), default=None, callback=plot_path,
                 help="Two-image form: write a match plot (PNG), matches coloured by confidence."),
    click.option("--homography", type=ExistingPath("homography file", dir_okay=False), default=None,
                 help="Two-image form: ground-truth 3x3 homography (text) image0 -> image1: report matches correct "
                      "within 3 px."),
    click.option("--json", "as_json", is_flag=True,
                 help="Print one JSON object per pair on stdout (batches: then a final summary line)."),
    click.option("--viz-dir", type=click.Path(file_okay=False), default=None,
                 help="Batch: write a match plot per pair matched in this run ({name0}_{name1}_matches.png)."),
    click.option("--viz-max-matches", type=click.IntRange(min=-1), default=VIZ_MAX_MATCHES, show_default=True,
                 help="Most match lines in a plot (--viz, --viz-dir); beyond, a random subset with every wrong "
                      "match (-1: all)."),
)
"""What ``match`` writes and prints (the ``output`` argument)."""

pairs_options = option_group(
    "source",
    click.option("--image-dir", type=ExistingPath("image folder", file_okay=False), default=None,
                 help="Batch form: root of the images; pair names are relative to it."),
    click.option("--pairs", "pairs_file", type=ExistingPath("pairs file", dir_okay=False, allow_dash=True),
                 default=None, metavar="FILE|-",
                 help="Batch: pairs file ('name0 name1' lines, names relative to --image-dir), '-' for stdin."),
    click.option("--pairs-mode", type=click.Choice(PAIR_MODES), default=None,
                 help="Batch: pair the images of --image-dir (recursively, sorted by name) instead of --pairs."),
    click.option("--window", type=click.IntRange(min=1), default=None,
                 help="--pairs-mode sequential: pair each image with the next K.  [default: 5]"),
    click.option("--loop", is_flag=True,
                 help="--pairs-mode sequential: the sequence is closed (last pairs with first)."),
    click.option("--batch-pairs", type=click.IntRange(1, MAX_BATCH_PAIRS), default=BATCH_PAIRS, show_default=True,
                 help="Batch: pairs matched together by LightGlue/SuperGlue (padded and masked, the same matches); "
                      "1 on the CPU, where batching does not pay; try 4-16 on a GPU."),
)
"""The batch form's images and pairs (the ``source`` argument)."""

verify_options = option_group(
    "verify",
    click.option("--verify", type=click.Choice(VERIFY_MODELS), default=None,
                 help="Batch: verify matches with a robust model (MAGSAC++) and store 'inliers' beside them."),
    click.option("--verify-threshold", type=FiniteFloatRange(min=0, min_open=True), default=None,
                 help=f"Inlier threshold in pixels.  [default: {VERIFY_THRESHOLD_PX}]"),
    click.option("--verify-confidence", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=None,
                 help=f"RANSAC confidence.  [default: {VERIFY_CONFIDENCE}]"),
    click.option("--seed", type=SEED, default=None,
                 help=f"RANSAC random seed (same seed, same inliers).  [default: {VERIFY_SEED}]"),
    click.option("--estimator", type=click.Choice(ESTIMATOR_CHOICES), default=None,
                 help="--verify: robust estimator, opencv (RANSAC), magsac (MAGSAC++), poselib (LO-RANSAC + "
                      f"refinement, extra lightmatch[poselib]) or colmap (pycolmap).  [default: {VERIFY_ESTIMATOR}]"),
)
"""Geometric verification of the batch form (the ``verify`` argument)."""


def _verify_options(verify: dict):
    """The :class:`~lightmatch.pipeline.verify.VerifyOptions` of the ``verify`` group (None without --verify);
    its settings without --verify are a usage error."""
    from ..pipeline.verify import VerifyOptions

    settings = {"threshold": verify["verify_threshold"], "confidence": verify["verify_confidence"],
                "seed": verify["seed"], "estimator": verify["estimator"]}
    if verify["verify"] is None:
        for name, value in zip(("--verify-threshold", "--verify-confidence", "--seed", "--estimator"),
                               settings.values()):
            if value is not None:
                raise click.UsageError(f"{name} needs --verify")
        return None
    return VerifyOptions(verify["verify"], **{k: v for k, v in settings.items() if v is not None})


# -------------------------------------------------------------------------------------------------- match ---

@main.command()
@click.argument("images", nargs=-1, type=ExistingPath("image", dir_okay=False))
@output_options
@pairs_options
@verify_options
@preset_option
@retrieval_options
@batch_options
@extractor_options
@matcher_options
def match(images: tuple[str, ...], output: dict, source: dict, verify: dict, batch: dict, preset: Optional[str],
          **opts: Any) -> None:
    """Match IMAGE0 and IMAGE1, or every pair of a folder.

    \b
    lightmatch match a.jpg b.jpg -o out --viz out/matches.png
    lightmatch match --image-dir imgs --pairs pairs.txt -o out
    lightmatch pairs imgs | lightmatch match --image-dir imgs --pairs - -o out --json
    lightmatch match --image-dir imgs --pairs-mode sequential --window 5 -o out --viz-dir out/viz
    lightmatch match --image-dir imgs --pairs-mode exhaustive -o out --verify fundamental
    lightmatch match --image-dir imgs --pairs-mode exhaustive -o out --verify fundamental --preset outdoor

    Batches extract each image once, resume where a previous (even killed) run stopped, and skip unreadable
    images. Exit status: 0 all pairs matched, 3 some images or pairs failed, 2 usage error, 1 error.
    """
    given = given_options(click.get_current_context())
    retrieval = pop_retrieval_options(opts)
    verify_options = _verify_options(verify)
    if "viz_max_matches" in given and output["viz_path"] is None and output["viz_dir"] is None:
        raise click.UsageError("--viz-max-matches needs --viz (two images) or --viz-dir (batches)")
    if "batch_pairs" in given and source["image_dir"] is None:
        raise click.UsageError("--batch-pairs needs --image-dir (the batch form)")
    if preset is not None:  # fills in what the user did not give; verification settings only with --verify
        chosen_verify = {"estimator": verify["estimator"], "verify_threshold": verify["verify_threshold"]}
        opts, chosen = apply_preset_split(preset, opts, chosen_verify,
                                          given | (set() if verify_options else set(chosen_verify)),
                                          {"threshold": "verify_threshold"})
        verify_options = _verify_options({**verify, **chosen})
    ray = _ray_options(batch)
    if source["image_dir"] is None:
        if ray is not None:
            raise click.UsageError("--executor ray is for batches (--image-dir)")
        batch_only = {"--pairs": source["pairs_file"], "--pairs-mode": source["pairs_mode"],
                      "--window": source["window"], "--loop": source["loop"], "--verify": verify["verify"],
                      "--viz-dir": output["viz_dir"]}
        named = [name for name, value in batch_only.items() if value not in (None, False)]
        if named:
            raise click.UsageError(f"{named[0]} needs --image-dir (the batch form)")
        if batch["overwrite"] and output["output_dir"] is None:
            raise click.UsageError("--overwrite needs -o OUTDIR")
        _match_two(images, output, batch["overwrite"], model_spec(opts))
        return
    _match_batch(images, output, source, verify_options, batch, ray, retrieval, model_spec(opts))


def _match_batch(images: tuple[str, ...], output: dict, source: dict, verify, batch: dict, ray, retrieval: dict,
                 spec) -> None:
    """``match --image-dir``: the batch form."""
    image_dir, pairs_file, pairs_mode, window, loop = (source[k] for k in ("image_dir", "pairs_file", "pairs_mode",
                                                                            "window", "loop"))
    output_dir, as_json, quiet = output["output_dir"], output["as_json"], batch["quiet"]
    if images:
        raise click.UsageError("give either IMAGE0 IMAGE1 or --image-dir, not both")
    for name, value in (("--viz", output["viz_path"]), ("--homography", output["homography"])):
        if value is not None:
            raise click.UsageError(f"{name} is for two images; batches take --viz-dir")
    if output_dir is None and not (output["viz_dir"] or as_json):
        raise click.UsageError("batches need an output folder: -o OUTDIR (or --viz-dir / --json to only look)")
    if (pairs_file is None) == (pairs_mode is None):
        raise click.UsageError("give the pairs: --pairs FILE (or - for stdin) or --pairs-mode "
                               "exhaustive|sequential|retrieval")
    if (window is not None or loop) and pairs_mode != "sequential":
        raise click.UsageError("--window and --loop go with --pairs-mode sequential")

    from ..pair_sources import PairSource
    from ..pipeline.batch import BatchOptions, match_batch

    pair_source = PairSource(image_dir, pairs_file, pairs_mode, window, loop, retrieval_settings(pairs_mode, retrieval))
    if pair_source.retrieved_per_image is not None and output_dir is None:
        raise click.UsageError("retrieval pairs need -o OUTDIR (features and global descriptors are kept there)")
    found = pairs_of(pair_source, output_dir, spec, quiet, batch["workers"])
    pairs = found.pairs
    if not pairs:
        click.echo(f"lightmatch: warning: no pairs to match (found no images in {image_dir})"
                   if pairs_mode else f"lightmatch: warning: no pairs in {pairs_file}", err=True)
    options = BatchOptions(verify=verify, viz_dir=output["viz_dir"], viz_max_matches=output["viz_max_matches"],
                           overwrite=batch["overwrite"], workers=batch["workers"], batch_pairs=source["batch_pairs"])
    extractor, matcher = spec.load()
    reporter = Reporter(as_json, quiet, "pair")
    with _batch_run():
        if output_dir is None and not quiet:
            click.echo("lightmatch: note: no -o OUTDIR, features and matches are not kept", err=True)
        try:
            summary = match_batch(image_dir, pairs, output_dir, extractor, matcher, options, reporter,
                                  _executor(ray, spec))
        finally:
            reporter.close()
    if found.retrieval is not None:  # images that failed before pairing count as failed images of the run
        summary.failed_images.update(found.failed_images)
        summary.images_failed = len(summary.failed_images)
    _finish(summary, reporter, as_json, quiet)


def _match_two(images: tuple[str, ...], output: dict, overwrite: bool, spec) -> None:
    """``match IMAGE0 IMAGE1``: the two-image form."""
    from ..io.homography import read_homography
    from ..models.factory import check_matcher_weights
    from ..pipeline.match import check_inputs, match_pair

    if len(images) != 2:
        raise click.UsageError("give exactly two images (IMAGE0 IMAGE1), or --image-dir for a batch")
    H = read_homography(output["homography"]) if output["homography"] else None
    check_matcher_weights(spec.matcher, spec.extractor, spec.matcher_weights)
    check_inputs(list(images), output["output_dir"])
    extractor, matcher = spec.load()
    result = match_pair(images[0], images[1], extractor, matcher, output_dir=output["output_dir"],
                        viz_path=output["viz_path"], homography=H, overwrite=overwrite,
                        viz_max_matches=output["viz_max_matches"])
    for warning in result.warnings:
        click.echo(f"lightmatch: warning: {warning}", err=True)

    line = result.event(matcher.num_layers).to_json()
    as_json = output["as_json"]
    click.echo(json.dumps(line) if as_json else format_pair_text(line, f"{extractor.name} + {matcher.name}"))


# ------------------------------------------------------------------------------------------------- pairs ---

@main.command("pairs")
@click.argument("image_dir", type=ExistingPath("image folder", file_okay=False))
@click.option("--mode", type=click.Choice(PAIR_MODES), default="exhaustive", show_default=True,
              help="exhaustive: every pair; sequential: each image with the next --window images (sorted names); "
                   "retrieval: each image with its --num-matched most similar images (VLAD of its features).")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="--mode sequential: pair each image with the next K.  [default: 5]")
@click.option("--loop", is_flag=True, help="--mode sequential: the sequence is closed (last pairs with first).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the pairs file here (default: stdout).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Retrieval: folder for features.h5, global-feats.h5 and codebook.npz, reused by a later "
                   "'match -o' into it (default: a temporary folder).")
@click.option("-q", "--quiet", is_flag=True, help="Retrieval: no progress bar.")
@retrieval_options
@extractor_options
def pairs_command(image_dir: str, mode: str, window: Optional[int], loop: bool, output: Optional[str],
                  store_dir: Optional[str], quiet: bool, **opts: Any) -> None:
    """List image pairs of IMAGE_DIR (recursive) as an hloc pairs file: one 'name0 name1' line per pair.

    \b
    lightmatch pairs imgs --mode sequential --window 3 -o pairs.txt
    lightmatch pairs imgs | lightmatch match --image-dir imgs --pairs - -o out
    lightmatch pairs imgs --mode retrieval --num-matched 10 --store out -o pairs.txt
    """
    from ..io.pairs import format_pairs, write_pairs
    from ..pair_sources import PairSource

    if (window is not None or loop) and mode != "sequential":
        raise click.UsageError("--window and --loop go with --mode sequential")
    settings = retrieval_settings(mode, pop_retrieval_options(opts))
    source = PairSource(image_dir, mode=mode, window=window, loop=loop, retrieval=settings)
    if store_dir is not None and source.retrieved_per_image is None:
        raise click.UsageError("--store is for the retrieval mode")
    found = pairs_of(source, store_dir, model_spec(opts), quiet, 2)
    pairs, failed = found.pairs, found.failed_images
    if not pairs:
        click.echo(f"lightmatch: warning: no pairs (found fewer than two images in {image_dir})", err=True)
    if output is not None:
        write_pairs(output, pairs)
    else:
        click.echo(format_pairs(pairs), nl=False)  # `| head` closing stdout is handled by the command group
    if failed:
        sys.exit(EXIT_PARTIAL)


# ----------------------------------------------------------------------------------------------- extract ---

@main.command()
@click.argument("image_dir", type=ExistingPath("image folder", file_okay=False))
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for features.h5 (hloc layout).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image on stdout, then a summary line.")
@batch_options
@extractor_options
def extract(image_dir: str, output_dir: str, as_json: bool, batch: dict, **opts: Any) -> None:
    """Extract features of every image under IMAGE_DIR (recursive) into OUTDIR/features.h5.

    \b
    lightmatch extract imgs -o out --features aliked --max-keypoints 2048

    Images already in features.h5 are skipped (--overwrite discards it, and matches.h5, whose matches index
    the old keypoints). Unreadable files are reported and skipped (exit status 3).
    """
    from ..io.pairs import list_images
    from ..pipeline.batch import BatchOptions, extract_batch

    ray = _ray_options(batch)
    names = list_images(image_dir)
    if not names:
        click.echo(f"lightmatch: warning: no images found in {image_dir}", err=True)
    spec = extractor_spec(model_spec(opts))  # the extractor exactly as `match` builds it
    extractor = spec.load()[0]
    reporter = Reporter(as_json, batch["quiet"], "image")
    try:
        with _batch_run():
            summary = extract_batch(image_dir, names, output_dir, extractor,
                                    BatchOptions(overwrite=batch["overwrite"], workers=batch["workers"]), reporter,
                                    _executor(ray, spec))
    finally:
        reporter.close()
    _finish(summary, reporter, as_json, batch["quiet"])


# ------------------------------------------------------------------------------------------------ export ---

@main.group()
def export() -> None:
    """Export features and matches to other tools."""


@export.command("colmap")
@click.option("--image-dir", type=ExistingPath("image folder", file_okay=False), required=True,
              help="Root of the images.")
@click.option("--features", "features_path", type=ExistingPath("features file", dir_okay=False), required=True,
              help="features.h5 (hloc layout).")
@click.option("--matches", "matches_path", type=ExistingPath("matches file", dir_okay=False), required=True,
              help="matches.h5 (hloc layout); pairs with 'inliers' (match --verify) become verified geometries.")
@click.option("--database", type=click.Path(dir_okay=False), required=True,
              help="COLMAP database to write (replaced if it exists).")
@click.option("--pairs", "pairs_file", type=ExistingPath("pairs file", dir_okay=False, allow_dash=True),
              default=None, metavar="FILE|-", help="Only these pairs (file, '-' for stdin); default: all.")
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
    from ..io.colmap import export_colmap, unfinished_inputs

    warning = unfinished_inputs(features_path, matches_path)
    if warning is not None:
        click.echo(f"lightmatch: warning: {warning}", err=True)
    result = export_colmap(image_dir, features_path, matches_path, database, pairs=pairs_file,
                           camera_model=camera_model, single_camera=single_camera)
    if result.num_verified_pairs < result.num_pairs:
        click.echo(f"lightmatch: warning: {result.num_pairs - result.num_verified_pairs} of {result.num_pairs} "
                   "pairs are not verified (no 'inliers'), and pycolmap's mapping uses verified matches only: match "
                   "with --verify fundamental (or run pycolmap.verify_matches on the database; docs/colmap.md)",
                   err=True)
    if as_json:
        click.echo(json.dumps({"type": "export", **result.__dict__}))
    else:
        click.echo(f"{result.database}: {result.num_images} images, {result.num_cameras} cameras, "
                   f"{result.num_pairs} pairs ({result.num_verified_pairs} verified), {result.num_matches} matches "
                   f"({result.num_inlier_matches} inliers)")
