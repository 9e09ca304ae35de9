"""Shared CLI pieces: the command group with its error handling, option sets, model construction."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..errors import LightmatchError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print a one-line error on stderr and exit."""
    click.echo(f"lightmatch: error: {message}", err=True)
    sys.exit(code)


class Group(click.Group):
    """Turns library errors into one-line messages (a traceback only with LIGHTMATCH_DEBUG=1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LightmatchError as exc:
            if os.environ.get("LIGHTMATCH_DEBUG"):
                raise
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("lightmatch: interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug or an unexpected environment problem: still one line
            if os.environ.get("LIGHTMATCH_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                 "(rerun with LIGHTMATCH_DEBUG=1 for a traceback)")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="lightmatch")
def main() -> None:
    """lightmatch: local feature extraction and matching.

    \b
    Match two images:       lightmatch match a.jpg b.jpg -o out --viz out/matches.png
    Match a folder:         lightmatch match --image-dir imgs --pairs-mode exhaustive -o out
    Evaluate, benchmark:    lightmatch eval pose PAIRS IMAGES / lightmatch benchmark
    Weights:                lightmatch weights list

    Outputs are hloc-compatible HDF5 stores (features.h5, matches.h5). Errors are one line on stderr with a
    non-zero exit code (1 error, 2 usage, 3 some pairs of a batch failed).
    """


def extractor_options(func):
    """Options shared by every command that extracts features."""
    options = [
        click.option("--features", "features", default="aliked", show_default=True,
                     help="Extractor: aliked (aliked-n16), aliked-n16rot, aliked-n32, aliked-t16, disk, superpoint, "
                          "sift, xfeat."),
        click.option("--max-keypoints", type=int, default=None,
                     help="Keypoints per image (default: 2048; 4096 for xfeat; -1: no cap)."),
        click.option("--resize", type=int, default=1024, show_default=True,
                     help="Long side of the image given to the network (-1: original size). Keypoints are "
                          "reported in original-image pixels."),
        click.option("--detection-threshold", type=float, default=None,
                     help="Detection score threshold (extractor's default when omitted)."),
        click.option("--aliked-nms", type=click.Choice(["reference", "strict"]), default="reference",
                     show_default=True,
                     help="ALIKED keypoint NMS: the reference's (what LightGlue was trained on) or kornia's strict "
                          "local maxima."),
        click.option("--weights", "extractor_weights", type=click.Path(dir_okay=False), default=None,
                     help="Extractor weights file (default: resolved from the registry)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def matcher_options(func):
    """Options shared by every command that matches."""
    options = [
        click.option("--matcher", default="lightglue", show_default=True,
                     type=click.Choice(["lightglue", "superglue", "nn"]), help="Matcher."),
        click.option("--depth-confidence", type=float, default=None,
                     help="LightGlue early exit, -1 disables adaptive depth (default 0.95; LighterGlue -1)."),
        click.option("--width-confidence", type=float, default=None,
                     help="LightGlue point pruning, -1 disables adaptive width (default 0.99; LighterGlue 0.95)."),
        click.option("--filter-threshold", type=float, default=None,
                     help="Minimum match confidence (LightGlue 0.1, SuperGlue 0.2)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
                     show_default=True, help="LightGlue arithmetic: auto is fp16 autocast on CUDA, fp32 on CPU."),
        click.option("--compile", "compile_matcher", is_flag=True,
                     help="torch.compile LightGlue's layers (worth it on CUDA for long runs)."),
        click.option("--sinkhorn-iterations", type=int, default=None, help="SuperGlue Sinkhorn iterations (100)."),
        click.option("--superglue-weights", type=click.Choice(["indoor", "outdoor"]), default="outdoor",
                     show_default=True, help="SuperGlue weights."),
        click.option("--ratio-threshold", type=float, default=None, help="NN matcher: Lowe ratio test."),
        click.option("--distance-threshold", type=float, default=None, help="NN matcher: max descriptor distance."),
        click.option("--matcher-weights", type=click.Path(dir_okay=False), default=None,
                     help="Matcher weights file (default: resolved from the registry)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_models(opts: dict):
    """Extractor and matcher from the parsed options."""
    from ..models.factory import load_extractor, load_matcher

    features = opts["features"]
    extra: dict[str, Any] = {"detection_threshold": opts.get("detection_threshold")}
    if features.startswith("aliked"):
        extra["nms"] = opts.get("aliked_nms")
    max_kp = opts.get("max_keypoints")
    if max_kp is None:
        max_kp = 4096 if features == "xfeat" else 2048
    resize = opts.get("resize")
    extractor = load_extractor(features, max_keypoints=max_kp, resize=None if resize in (None, -1) else resize,
                               device=opts.get("device", "auto"), weights=opts.get("extractor_weights"), **extra)
    name = opts.get("matcher", "lightglue")
    mopts: dict[str, Any] = {}
    if name == "lightglue":
        mopts = {"depth_confidence": opts.get("depth_confidence"), "width_confidence": opts.get("width_confidence"),
                 "filter_threshold": opts.get("filter_threshold"), "precision": opts.get("precision"),
                 "compile": opts.get("compile_matcher") or None}
    elif name == "superglue":
        mopts = {"variant": opts.get("superglue_weights"), "sinkhorn_iterations": opts.get("sinkhorn_iterations"),
                 "match_threshold": opts.get("filter_threshold")}
    elif name == "nn":
        mopts = {"ratio_threshold": opts.get("ratio_threshold"),
                 "distance_threshold": opts.get("distance_threshold")}
    matcher = load_matcher(name, features=features, device=extractor.device, weights=opts.get("matcher_weights"),
                           **mopts)
    return extractor, matcher


def format_pair_text(summary: dict) -> str:
    """Human-readable lines for one pair's summary."""
    t = summary["timings_ms"]
    lines = [f"{summary['image0']}: {summary['keypoints0']} keypoints",
             f"{summary['image1']}: {summary['keypoints1']} keypoints",
             f"matches: {summary['matches']}" + (f" (correct within 3 px: {summary['correct']})"
                                                 if "correct" in summary else "")
             + (f", stopped after layer {summary['stop_layer']}" if summary.get("stop_layer") else ""),
             "time: " + ", ".join(f"{k} {v:.0f} ms" for k, v in t.items())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ estimators and presets ---

ESTIMATOR_CHOICES = ("opencv", "magsac", "poselib", "colmap")


def preset_option(func):
    """``--preset indoor|outdoor|fast`` (:mod:`lightmatch.presets`): fills in the options the user did not give."""
    from ..presets import PRESETS

    listing = "; ".join(p.describe() for p in PRESETS.values())
    return click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
                        help=f"Measured settings; options given on the command line win. {listing}.")(func)


def given_options(ctx: click.Context) -> set[str]:
    """Names of the parameters the user set (command line or environment), not left at their defaults."""
    from click.core import ParameterSource

    return {name for name in ctx.params
            if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
