"""``lightmatch reconstruct``: a folder of photos to COLMAP models (extract, pair, match, verify, database, mapper)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Optional

import click

from ..defaults import NUM_MATCHED, SEQUENTIAL_WINDOW
from ..io.cameras import CAMERA_MODELS
from .common import EXIT_OK, EXIT_PARTIAL, SEED, ExistingPath, extractor_options, main, matcher_options, model_spec
from .match import EXIT_INTERRUPTED, MAX_WORKERS, _batch_run
from .reporter import Reporter
from .retrieval import NUM_MATCHED_RANGE


class _StageReporter(Reporter):
    """A progress bar per batch: images while extracting for retrieval, pairs while matching."""

    def __call__(self, event) -> None:
        from ..pipeline.events import BatchStart

        if isinstance(event, BatchStart):
            self.close()
            self.unit = "pair" if event.pairs_total else "image"
        super().__call__(event)


def format_reconstruction(result) -> str:
    """Human-readable lines for a :class:`~lightmatch.sfm.reconstruct.Reconstruction`."""
    lines = [f"images: {result.images}, registered {result.registered} in {result.models} model(s)"
             + (f", {len(result.failed_images)} unreadable" if result.failed_images else "")]
    if result.points:
        lines.append(f"points: {result.points}, mean track length {result.mean_track_length:.2f}, mean "
                     f"reprojection error {result.mean_reprojection_error:.3f} px")
    m = result.match
    lines.append(f"pairs: {result.pairs} ({result.pairs_mode}); {m.pairs_matched} matched, {m.pairs_skipped} already "
                 f"done, {m.pairs_failed} failed; images: {m.images_extracted} extracted, {m.images_reused} read back")
    for stats in result.model_stats:
        lines.append(f"model {stats.path}: {stats.registered} images, {stats.points} points, "
                     f"{stats.mean_reprojection_error:.3f} px")
    if result.pictures:
        lines.append("pictures: " + ", ".join(result.pictures))
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.times.items()))
    return "\n".join(lines)


@main.command("reconstruct")
@click.argument("image_dir", type=ExistingPath("image folder", file_okay=False))
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for features.h5, matches.h5, pairs.txt, database.db, sparse/N/ and top_view_N.png.")
@click.option("--pairs-mode", type=click.Choice(["auto", "exhaustive", "retrieval", "sequential"]), default="auto",
              show_default=True,
              help="auto: exhaustive up to 30 images, retrieval above; sequential: ordered frames (video).")
@click.option("--num-matched", type=NUM_MATCHED_RANGE, default=None,
              help=f"Retrieval: images paired with each image.  [default: {NUM_MATCHED}]")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="--pairs-mode sequential: pair each image with the next K.  [default: 5]")
@click.option("--retrieval", type=NUM_MATCHED_RANGE, default=None, metavar="K",
              help="--pairs-mode sequential: add each image's K most similar images (loop closures).")
@click.option("--codebook", type=click.Path(dir_okay=False), default=None,
              help="Retrieval: VLAD codebook (.npz), used when it exists, else learned and saved there.  "
                   "[default: OUTDIR/codebook.npz]")
@click.option("--global-features", type=ExistingPath("global features file", dir_okay=False), default=None,
              help="Retrieval: your own hloc global-feats.h5 instead of our VLAD.")
@click.option("--mapper", type=click.Choice(["incremental", "global"]), default="incremental", show_default=True,
              help="pycolmap's incremental mapper (COLMAP) or global one (GLOMAP).")
@click.option("--camera-model", type=click.Choice(list(CAMERA_MODELS)), default="SIMPLE_RADIAL", show_default=True,
              help="COLMAP camera model, initialised with focal 1.2 * max(W, H).")
@click.option("--single-camera", is_flag=True, help="One camera shared by all images (same size).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of RANSAC and of the mapper.")
@click.option("--mapper-log", is_flag=True, help="Show COLMAP's own log lines (each image registered, solver "
              "warnings) on stderr.")
@click.option("--json", "as_json", is_flag=True, help="End with the summary as one JSON line on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary text (warnings remain).")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=2, show_default=True,
              help="Background threads decoding images ahead of the network.")
@extractor_options
@matcher_options
def reconstruct_command(image_dir: str, output_dir: str, pairs_mode: str, num_matched: Optional[int],
                        window: Optional[int], retrieval: Optional[int], codebook: Optional[str],
                        global_features: Optional[str], mapper: str, camera_model: str, single_camera: bool,
                        seed: int, mapper_log: bool, as_json: bool, quiet: bool, workers: int, **opts: Any) -> None:
    """Reconstruct the scene(s) of IMAGE_DIR (recursive) into COLMAP models under OUTDIR/sparse/.

    \b
    lightmatch reconstruct photos -o out
    lightmatch reconstruct photos -o out --pairs-mode retrieval --num-matched 10 --mapper global
    lightmatch reconstruct frames -o out --pairs-mode sequential --window 5 --retrieval 5 --single-camera

    Needs pycolmap (pip install "lightmatch[sfm]"). A killed run resumes where it stopped; unreadable images are
    reported and left out (exit status 3, as when no model is found).
    """
    from ..pipeline.verify import VerifyOptions
    from ..sfm.mapper import import_pycolmap
    from ..sfm.reconstruct import VERIFY_MODEL, ReconstructOptions, reconstruct

    if num_matched is not None and pairs_mode not in ("auto", "retrieval"):
        raise click.UsageError("--num-matched goes with --pairs-mode retrieval (or auto)")
    if (window is not None or retrieval is not None) and pairs_mode != "sequential":
        raise click.UsageError("--window and --retrieval go with --pairs-mode sequential")
    if codebook is not None and global_features is not None:
        raise click.UsageError("--codebook is for our VLAD descriptors; --global-features replaces them")
    import_pycolmap()
    options = ReconstructOptions(pairs_mode=pairs_mode, num_matched=num_matched or NUM_MATCHED,
                                 window=window or SEQUENTIAL_WINDOW,
                                 retrieval=retrieval, codebook=codebook, global_features=global_features,
                                 mapper=mapper, camera_model=camera_model, single_camera=single_camera,
                                 verify=VerifyOptions(VERIFY_MODEL, seed=seed), seed=seed, workers=workers,
                                 mapper_log=mapper_log)
    extractor, matcher = model_spec(opts).load()
    reporter = _StageReporter(False, quiet, "pair")

    def stage(text: str) -> None:
        reporter.close()
        if not quiet:
            click.echo(f"lightmatch: reconstruct: {text}", err=True)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_batch_run())
        try:
            result = reconstruct(image_dir, output_dir, extractor, matcher, options, on_event=reporter,
                                 on_stage=stage)
        finally:
            reporter.close()
    if result.interrupted:
        click.echo("lightmatch: interrupted; the work done is saved, rerun the same command to finish", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if not quiet:
        click.echo(format_reconstruction(result))
    if as_json:
        click.echo(json.dumps(result.to_json()))
    problems = []
    if result.failed_images:
        problems.append(f"{len(result.failed_images)} image(s) could not be used")
    if not result.models:
        problems.append("the mapper found no model (too few verified matches between the images)")
    if problems:
        click.echo(f"lightmatch: {'; '.join(problems)}", err=True)
        sys.exit(EXIT_PARTIAL)
    sys.exit(EXIT_OK)
