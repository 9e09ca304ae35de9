"""``lightmatch eval pose``, ``lightmatch eval homography`` and ``lightmatch benchmark``."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Optional

import click

from ..presets import apply_preset_split
from .common import (
    ESTIMATOR_CHOICES,
    MAX_RESIZE,
    SEED,
    ExistingPath,
    FiniteFloatRange,
    SizeOrOriginal,
    extractor_options,
    given_options,
    main,
    matcher_options,
    model_spec,
    plot_path,
    preset_option,
)

_INT = re.compile(r"^-?\d+(,-?\d+)*$")
ESTIMATION_NAMES = {"threshold": "ransac_threshold"}  # a preset's estimation threshold is --ransac-threshold here
THRESHOLD_PX = FiniteFloatRange(min=0, min_open=True)
MAX_SYNTHETIC_PAIRS = 10000  # each writes an image into OUTDIR/synthetic
MAX_KEYPOINTS_TIMED = 1 << 16


class IntListCommand(click.Command):
    """A command whose listed options take several integers, SuperGlue/argparse style: ``--resize 640 480``,
    ``--num-keypoints 256 512 1024``. ``int_lists`` maps an option to the most values it takes (``None``: any);
    the values are rewritten to ``--option=640,480`` before click parses them."""

    int_lists: dict[str, Optional[int]] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rewritten += args[i:]
                break
            if arg in self.int_lists:
                limit = self.int_lists[arg]
                values = []
                i += 1
                while i < len(args) and _INT.match(args[i]) and (limit is None or len(values) < limit):
                    values.append(args[i])
                    i += 1
                if values:
                    rewritten.append(f"{arg}={','.join(values)}")
                else:  # e.g. --resize 640x480: one value, parsed by the option's callback
                    rewritten.append(arg)
                continue
            rewritten.append(arg)
            i += 1
        return super().parse_args(ctx, rewritten)


def _command_class(**int_lists: Optional[int]) -> type:
    return type("Command", (IntListCommand,), {"int_lists": {f"--{k.replace('_', '-')}": v
                                                             for k, v in int_lists.items()}})


def _int_list(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        numbers = [int(v) for v in re.split(r"[,x\s]+", value.strip()) if v]
    except ValueError:
        raise click.BadParameter(f"expected integers, got '{value}'", ctx, param) from None
    if not numbers:
        raise click.BadParameter("expected at least one integer", ctx, param)
    return numbers


def _pose_resize(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[int]]:
    """``--resize`` of ``eval pose``: W H, one long side, or -1 (W -1 means W), each side in [1, MAX_RESIZE]."""
    numbers = _int_list(ctx, param, value)
    sides = numbers[:1] if len(numbers) == 2 and numbers[1] == -1 else numbers
    if len(sides) > 2 or (sides != [-1] and not all(1 <= n <= MAX_RESIZE for n in sides)):
        raise click.BadParameter(f"give W H or one long side, each in [1, {MAX_RESIZE}], or -1 for the original "
                                 f"size; got {' '.join(map(str, numbers))}", ctx, param)
    return numbers


def _keypoint_counts(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[int]]:
    numbers = _int_list(ctx, param, value)
    if not all(1 <= n <= MAX_KEYPOINTS_TIMED for n in numbers):
        raise click.BadParameter(f"each count must be in [1, {MAX_KEYPOINTS_TIMED}]; got "
                                 f"{' '.join(map(str, numbers))}", ctx, param)
    return numbers


def _without(*names: str):
    """Drop options that a shared option set added (a command that redefines them, or has no use for them)."""
    def decorator(func):
        func.__click_params__ = [p for p in getattr(func, "__click_params__", []) if p.name not in names]
        return func
    return decorator


class _Progress:
    """``progress(done, total)`` callback drawing a tqdm bar on stderr (only on a terminal)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, unit="step", disable=None, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _echo_report(text: str, payload: dict[str, Any], as_json: bool) -> None:
    """The table, preceded by the line saying which estimator and threshold produced it (or the JSON)."""
    settings = payload.get("settings", {})
    if not as_json and "estimator" in settings:
        seed = settings.get("seed")
        text = (f"Estimator: {settings['estimator']}, threshold {settings['ransac_thresh']:g} px"
                + (f", seed {seed}" if seed is not None else "")
                + (f", preset {settings['preset']}" if settings.get("preset") else "") + "\n" + text)
    click.echo(json.dumps(payload) if as_json else text)


@main.group("eval")
def eval_group() -> None:
    """Evaluate features and matchers: relative pose (SuperGlue's ScanNet protocol) or homographies (HPatches).

    \b
    lightmatch eval pose pairs_with_gt.txt images/ -o out
    lightmatch eval homography hpatches-sequences-release/ -o out
    lightmatch eval homography --synthetic photos/ --num-pairs 50 -o out
    """


@eval_group.command("pose", cls=_command_class(resize=2))
@click.argument("paths", nargs=-1, required=True, metavar="[PAIRS_FILE] IMAGE_DIR")
@click.option("--resize", default="640 480", show_default=True, callback=_pose_resize, metavar="W H",
              help="Evaluation size, as SuperGlue's match_pairs.py: W H (exact size), one number (long side) or "
                   "-1 (original size). Intrinsics are scaled to it; the extractor sees the resized image.")
@click.option("--interpolation", type=click.Choice(["linear", "area"]), default="linear", show_default=True,
              help="cv2.resize interpolation for the evaluation images (SuperGlue: linear, cv2's default).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for results.jsonl (per pair), summary.json, features.h5/matches.h5 and viz/.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the RANSAC of every pair.")
@click.option("--estimator", type=click.Choice(ESTIMATOR_CHOICES), default="opencv", show_default=True,
              help="Relative-pose estimator: opencv (SuperGlue's protocol), magsac (OpenCV MAGSAC++), poselib "
                   "(LO-RANSAC + bundle refinement), colmap (pycolmap LO-RANSAC + refinement).")
@click.option("--ransac-threshold", type=THRESHOLD_PX, default=1.0, show_default=True,
              help="Inlier (epipolar) threshold in pixels of the evaluation images.")
@preset_option
@click.option("--viz", is_flag=True, help="Write match plots (green: epipolar error < 5e-4) into OUTDIR/viz.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUTDIR's features.h5/matches.h5 when they were made with other settings.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object instead of the table.")
@click.option("--colmap-model", type=ExistingPath("COLMAP model folder", file_okay=False), default=None,
              help="Ground truth from this COLMAP model (cameras/images/points3D) instead of PAIRS_FILE: pairs from "
                   "--pairs, or sampled by covisibility (-o also writes them as OUTDIR/pairs_with_gt.txt).")
@click.option("--pairs", "model_pairs", type=ExistingPath("pairs file", dir_okay=False), default=None,
              help="--colmap-model: evaluate these pairs ('name0 name1' lines).")
@click.option("--num-pairs", type=click.IntRange(min=1), default=None,
              help="--colmap-model: sample this many pairs (MegaDepth-1500 style).  [default: 1500]")
@click.option("--min-covisibility", type=FiniteFloatRange(0, 1), default=None,
              help="--colmap-model: least share of 3D points both images see (of the smaller set).  [default: 0.1]")
@click.option("--features-h5", type=ExistingPath("features file", dir_okay=False), default=None,
              help="Evaluate the features of an earlier `lightmatch match` run (keypoints in original pixels) ...")
@click.option("--matches-h5", type=ExistingPath("matches file", dir_okay=False), default=None,
              help="... and its matches, instead of extracting and matching.")
@_without("resize")
@extractor_options
@matcher_options
@click.pass_context
def eval_pose(ctx: click.Context, paths: tuple[str, ...], resize: list[int], interpolation: str,
              output_dir: Optional[str], seed: int, estimator: str, ransac_threshold: float, preset: Optional[str],
              viz: bool, overwrite: bool, as_json: bool, colmap_model: Optional[str], model_pairs: Optional[str],
              num_pairs: Optional[int], min_covisibility: Optional[float], features_h5: Optional[str],
              matches_h5: Optional[str], **opts: Any) -> None:
    """Relative pose on PAIRS_FILE (SuperGlue format with ground truth), or on the pairs of a COLMAP model
    (--colmap-model), with images in IMAGE_DIR.

    Prints SuperGlue's table: AUC of the pose error at 5/10/20 degrees, precision (epipolar error < 5e-4) and
    matching score, in percent.

    \b
    lightmatch eval pose scannet_sample/pairs_with_gt.txt scannet_sample/images -o out
    lightmatch eval pose pairs.txt images --features-h5 run/features.h5 --matches-h5 run/matches.h5
    lightmatch eval pose scannet_sample/pairs_with_gt.txt scannet_sample/images --preset indoor --seed 1
    lightmatch eval pose --colmap-model sfm/sparse/0 images --num-pairs 200 --min-covisibility 0.2 -o out
    """
    from ..eval.pose import evaluate_pose, format_pose_table

    pairs_source, image_dir, model_settings = _pose_pairs_source(paths, colmap_model, model_pairs, num_pairs,
                                                                 min_covisibility, seed, output_dir)

    if preset is not None:
        opts, chosen = apply_preset_split(preset, opts, {"resize": resize, "interpolation": interpolation,
                                                         "estimator": estimator, "ransac_threshold": ransac_threshold},
                                          given_options(ctx), ESTIMATION_NAMES)
        resize, interpolation, estimator, ransac_threshold = chosen.values()
        resize = [resize] if isinstance(resize, int) else resize
    extractor = matcher = None
    if features_h5 is None and matches_h5 is None:
        extractor, matcher = model_spec({**opts, "resize": -1}).load()
    progress = _Progress("eval pose")
    try:
        report = evaluate_pose(pairs_source, image_dir, extractor, matcher, resize=resize, seed=seed,
                               ransac_thresh=ransac_threshold, estimator=estimator, output_dir=output_dir, viz=viz,
                               features_h5=features_h5, matches_h5=matches_h5, interpolation=interpolation,
                               progress=progress, overwrite=overwrite, upsample=opts["upsample"])
    finally:
        progress.close()
    report.settings.update(preset=preset, **model_settings)
    _echo_report(format_pose_table(report.summary), report.to_json(), as_json)


def _check_exists(paths: tuple[str, ...], names: tuple[str, ...]) -> None:
    for path, name in zip(paths, names):
        if not os.path.exists(path):
            raise click.UsageError(f"Invalid value for '{name}': {path}: not found")
        if name == "IMAGE_DIR" and not os.path.isdir(path):
            raise click.UsageError(f"Invalid value for '{name}': {path}: not a folder")


def _pose_pairs_source(paths: tuple[str, ...], colmap_model: Optional[str], model_pairs: Optional[str],
                       num_pairs: Optional[int], min_covisibility: Optional[float], seed: int,
                       output_dir: Optional[str]) -> tuple[Any, str, dict[str, Any]]:
    """The pairs file, or the pairs of ``--colmap-model`` (written to OUTDIR/pairs_with_gt.txt with -o), the
    image folder, and settings describing where the pairs came from."""
    model_only = {"--pairs": model_pairs, "--num-pairs": num_pairs, "--min-covisibility": min_covisibility}
    if colmap_model is None:
        given = [name for name, value in model_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{given[0]} needs --colmap-model")
        if len(paths) != 2:
            raise click.UsageError("give PAIRS_FILE IMAGE_DIR (or --colmap-model DIR IMAGE_DIR)")
        _check_exists(paths, ("PAIRS_FILE", "IMAGE_DIR"))
        return paths[0], paths[1], {}
    if len(paths) != 1:
        raise click.UsageError("with --colmap-model give only IMAGE_DIR (the model holds the ground truth)")
    _check_exists(paths, ("IMAGE_DIR",))
    if model_pairs is not None and (num_pairs is not None or min_covisibility is not None):
        raise click.UsageError("give --pairs, or --num-pairs/--min-covisibility to sample, not both")
    from pathlib import Path

    from ..eval.colmap_model import MIN_COVISIBILITY, NUM_PAIRS, pairs_from_colmap_model, write_pose_pairs

    if min_covisibility is None:
        min_covisibility = MIN_COVISIBILITY
    found = pairs_from_colmap_model(colmap_model, model_pairs, NUM_PAIRS if num_pairs is None else num_pairs,
                                    min_covisibility, seed=seed)
    settings: dict[str, Any] = {"colmap_model": colmap_model, "model_pairs": model_pairs,
                                "num_candidate_pairs": found.num_candidates,
                                "mean_covisibility": float(found.covisibility.mean()),
                                "distortion_ignored_cameras": found.distorted_cameras}
    if model_pairs is None:
        settings["min_covisibility"] = min_covisibility
    if output_dir is not None:
        settings["pairs_written"] = str(write_pose_pairs(found.pairs, Path(output_dir) / "pairs_with_gt.txt"))
    return found.pairs, paths[0], settings


@eval_group.command("homography")
@click.argument("dataset", required=False, type=ExistingPath("data set"))
@click.option("--synthetic", "synthetic_images", type=ExistingPath("image folder", file_okay=False), default=None,
              help="Make synthetic pairs from the images of this folder (written to OUTDIR/synthetic) instead of "
                   "reading DATASET.")
@click.option("--num-pairs", type=click.IntRange(1, MAX_SYNTHETIC_PAIRS), default=20, show_default=True,
              help="Number of synthetic pairs.")
@click.option("--resize-short", type=SizeOrOriginal("the original size", MAX_RESIZE), default=None,
              help="Short side of the images given to the extractor, glue-factory's HPatches protocol (-1: original "
                   "size).  [default: 480]")
@click.option("--resize", type=SizeOrOriginal("the original size", MAX_RESIZE), default=None,
              help="Long side instead, as --resize means in every other command (-1: original size).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for results.jsonl, summary.json, synthetic/ and viz/.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the synthetic set and of RANSAC.")
@click.option("--estimator", type=click.Choice(ESTIMATOR_CHOICES + ("ransac",)), default="opencv",
              show_default=True, help="Robust homography estimator: opencv (RANSAC; 'ransac' is an older name), "
                                      "magsac (MAGSAC++), poselib (LO-RANSAC + refinement), colmap (LO-RANSAC).")
@click.option("--ransac-threshold", type=THRESHOLD_PX, default=0.5, show_default=True,
              help="Inlier threshold in pixels (glue-factory's OpenCV setting).")
@preset_option
@click.option("--all-scenes", is_flag=True, help="HPatches: keep the large scenes glue-factory leaves out.")
@click.option("--viz", is_flag=True, help="Write match plots (green: within 3 px) into OUTDIR/viz.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object instead of the table.")
@_without("resize")
@extractor_options
@matcher_options
@click.pass_context
def eval_homography(ctx: click.Context, dataset: Optional[str], synthetic_images: Optional[str], num_pairs: int,
                    resize_short: Optional[int], resize: Optional[int], output_dir: Optional[str], seed: int,
                    estimator: str, ransac_threshold: float, preset: Optional[str], all_scenes: bool, viz: bool,
                    as_json: bool, **opts: Any) -> None:
    """Homography estimation on DATASET (HPatches layout, or a folder with pairs.txt such as OUTDIR/synthetic).

    Prints AUC of the corner error at 1/3/5 px for RANSAC and DLT, precision and recall at 3 px (percent), and the
    mean numbers of keypoints and matches.

    \b
    lightmatch eval homography hpatches-sequences-release -o out
    lightmatch eval homography --synthetic photos/ --num-pairs 50 -o out
    lightmatch eval homography out/synthetic --features disk
    lightmatch eval homography --synthetic photos/ --preset outdoor
    """
    from ..eval.homography import evaluate_homography, format_homography_table

    if (dataset is None) == (synthetic_images is None):
        raise click.UsageError("give DATASET or --synthetic IMAGE_DIR (one of them)")
    if resize is not None and resize_short is not None:
        raise click.UsageError("give --resize (long side) or --resize-short (short side), not both")
    if preset is not None:  # the preset's resize is a long side; an explicit --resize-short keeps the short side
        given = given_options(ctx) | ({"resize"} if resize_short is not None else set())
        opts, chosen = apply_preset_split(preset, opts, {"resize": resize, "estimator": estimator,
                                                         "ransac_threshold": ransac_threshold}, given, ESTIMATION_NAMES)
        resize, estimator, ransac_threshold = chosen.values()
    side, size = ("long", resize) if resize is not None else ("short", 480 if resize_short is None else resize_short)
    extractor, matcher = model_spec({**opts, "resize": -1}).load()
    progress = _Progress("eval homography")
    try:
        report = evaluate_homography(extractor, matcher, dataset=dataset, synthetic_images=synthetic_images,
                                     num_pairs=num_pairs, output_dir=output_dir,
                                     resize=None if size == -1 else size, side=side, estimator=estimator,
                                     ransac_thresh=ransac_threshold, seed=seed, skip_large=not all_scenes, viz=viz,
                                     upsample=opts["upsample"], progress=progress)
    finally:
        progress.close()
    report.settings.update(preset=preset)
    _echo_report(format_homography_table(report.summary), report.to_json(), as_json)


@main.command("benchmark", cls=_command_class(num_keypoints=None))
@click.option("--num-keypoints", default="256 512 1024 2048 4096", show_default=True, callback=_keypoint_counts,
              metavar="N [N ...]",
              help="Keypoints per image, several numbers (e.g. --num-keypoints 512 1024 2048).")
@click.option("--repeat", type=click.IntRange(1, 10 ** 6), default=100, show_default=True,
              help="Timed repetitions per measurement.")
@click.option("--warmup", type=click.IntRange(0, 10 ** 6), default=10, show_default=True,
              help="Untimed calls before timing.")
@click.option("--pairs-dir", type=ExistingPath("pairs folder", file_okay=False), default=None,
              help="More pairs: LightGlue's easy/difficult pairs (e.g. data/lightglue_bench) or any folder "
                   "(consecutive sorted images are paired). The bundled sample pair is always timed.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="torch CPU threads (default: torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print all measurements as one JSON object.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, callback=plot_path,
              help="Plot latency against keypoints (PNG).")
@_without("max_keypoints", "detection_threshold")
@extractor_options
@matcher_options
def benchmark(num_keypoints: list[int], repeat: int, warmup: int, pairs_dir: Optional[str], threads: Optional[int],
              as_json: bool, plot_path: Optional[str], **opts: Any) -> None:
    """Matcher latency at fixed keypoint counts, as LightGlue's benchmark.py.

    Each image gets exactly N keypoints (detection threshold disabled), features are extracted once per N (not
    timed), the matcher alone is timed: warm-up, then the mean over --repeat calls. LightGlue runs `full` (no
    early exit, no pruning) and `adaptive` (--depth-confidence/--width-confidence). --backend onnxruntime times
    the exported graphs against torch in the same run, extraction per image included.

    \b
    lightmatch benchmark --pairs-dir data/lightglue_bench --num-keypoints 512 1024 2048 --repeat 10
    """
    import torch

    from ..benchmark import format_benchmark_tables, run_benchmark

    if threads is not None:
        torch.set_num_threads(threads)
    reference = None
    if opts.get("backend") == "onnxruntime":  # timed against the torch models it runs, in the same run
        from ..export.backend import onnx_models

        reference = model_spec({**opts, "max_keypoints": max(num_keypoints), "backend": "torch"}).load()
        extractor, matcher = onnx_models(*reference)
    else:
        extractor, matcher = model_spec({**opts, "max_keypoints": max(num_keypoints)}).load()
    progress = _Progress("benchmark")
    try:
        report = run_benchmark(extractor, matcher, num_keypoints, pairs_dir=pairs_dir, repeat=repeat, warmup=warmup,
                               progress=progress, reference=reference)
    finally:
        progress.close()
    if plot_path:
        from ..viz import plot_latency

        plot_latency(report.num_keypoints, report.series(), plot_path,
                     title=f"{report.features} + {report.matcher} on {report.device}, {report.threads} threads")
    _echo_report(format_benchmark_tables(report), report.to_json(), as_json)
