"""Shared CLI pieces: the command group with its error handling, option sets and the model spec they give."""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable, NoReturn, Optional

import click

from ..defaults import DEFAULT_RESIZE
from ..errors import ConfigError, LightmatchError
from ..precision import PRECISIONS

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print a one-line error on stderr and exit."""
    click.echo(f"lightmatch: error: {message}", err=True)
    sys.exit(code)


def _stdout_closed() -> NoReturn:
    """The reader of stdout went away (``lightmatch ... | head``): not an error. Later writes, and the flush at
    exit, go to /dev/null; the command ends with status 0, as ``cat file | head`` does for the user."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_OK)


class Group(click.Group):
    """Turns library errors into one-line messages (a traceback only with LIGHTMATCH_DEBUG=1) and a closed stdout
    into a quiet exit, for every command (help and version included)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:  # the top-level --help and --version print here
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            _stdout_closed()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # output still buffered must fail here, not in the interpreter's exit
        except BrokenPipeError:
            _stdout_closed()
        except LightmatchError as exc:
            if os.environ.get("LIGHTMATCH_DEBUG"):
                raise
            fail(str(exc).replace("\n", " "), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("lightmatch: interrupted", err=True)
            sys.exit(130)
        except click.UsageError as exc:  # one line naming the option and what it accepts
            command = exc.ctx.command_path if exc.ctx is not None else "lightmatch"
            fail(f"{exc.format_message()} (see '{command} --help')", EXIT_USAGE)
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


class SizeOrOriginal(click.ParamType):
    """A positive integer up to ``most``, or -1 for "no limit" (``what_none`` says what -1 means)."""

    name = "INTEGER"

    def __init__(self, what_none: str, most: Optional[int] = None) -> None:
        self.what_none, self.most = what_none, most

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer", param, ctx)
        if (number < 1 and number != -1) or (self.most is not None and number > self.most):
            most = f" (at most {self.most})" if self.most is not None else ""
            self.fail(f"must be >= 1, or -1 for {self.what_none}{most}; got {number}", param, ctx)
        return number


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (which pass its comparisons)."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        _float(self, value, param, ctx, self._describe_range())
        return super().convert(value, param, ctx)


class ExistingPath(click.Path):
    """``click.Path`` of something that must exist (a usage error naming the option when it does not); ``-`` (standard
    input) passes when ``allow_dash``."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        super().__init__(exists=False, **kwargs)
        self.what = what

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if not (self.allow_dash and value == "-") and not os.path.exists(value):
            self.fail(f"{value}: {self.what} not found (no such file or folder)", param, ctx)
        return super().convert(value, param, ctx)


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` of a device this machine has."""

    name = "DEVICE"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        text = str(value).strip().lower()
        kind, _, index = text.partition(":")
        if text in ("auto", "cpu"):
            return text
        if kind != "cuda" or (index and not index.isdigit()):
            self.fail(f"{value!r}: give auto, cpu, cuda or cuda:N", param, ctx)
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            self.fail(f"{value}: this machine has {count} CUDA device(s) (use --device cpu or auto)", param, ctx)
        return text


def known_features(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """``--features``: one of the extractors the factory builds."""
    from ..models.factory import EXTRACTORS

    if value is not None and value not in EXTRACTORS:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(EXTRACTORS)}", ctx, param)
    return value


def plot_path(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """A plot's file name, whose extension names a format plots are written in."""
    from ..viz import plot_format

    if value is not None:
        try:
            plot_format(value)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


MAX_RESIZE = 16384  # px, the long side; beyond, one image's float copy alone is gigabytes
SEED = click.IntRange(0, 2 ** 31 - 1)  # what OpenCV's, NumPy's and PoseLib's generators all take


class Confidence(click.ParamType):
    """A LightGlue adaptivity confidence: in (0, 1], or -1 to disable."""

    name = "FLOAT"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        number = _float(self, value, param, ctx, "(0, 1] or -1")
        if not (0 < number <= 1 or number == -1):
            self.fail(f"must be in (0, 1], or -1 to disable; got {value}", param, ctx)
        return number


class Fraction(click.ParamType):
    """A finite number in [``low``, 1] (``low`` itself excluded when ``open_low``)."""

    name = "FLOAT"

    def __init__(self, low: float = 0.0, open_low: bool = False) -> None:
        self.low, self.open_low = low, open_low

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        interval = f"{'(' if self.open_low else '['}{self.low:g}, 1]"
        number = _float(self, value, param, ctx, interval)
        above = number > self.low if self.open_low else number >= self.low
        if not (above and number <= 1):
            self.fail(f"must be in {interval}; got {value}", param, ctx)
        return number


def _float(kind: click.ParamType, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context],
           allowed: str = "") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        kind.fail(f"{value!r} is not a number{' in ' + allowed if allowed else ''}", param, ctx)
    if not math.isfinite(number):
        kind.fail(f"must be a finite number{' in ' + allowed if allowed else ''}; got {value}", param, ctx)
    return number


POSITIVE_FLOAT = FiniteFloatRange(min=0, min_open=True)


def option_group(name: str, *options: Callable) -> Callable:
    """A decorator adding ``options`` (``click.option`` decorators) to a command, whose values reach it as one
    dict argument ``name`` (by parameter name) instead of one argument each."""
    def probe() -> None:
        """Only carries the options' parameters, to read their names."""

    for option in options:
        option(probe)
    names = [param.name for param in getattr(probe, "__click_params__")]

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = {key: kwargs.pop(key) for key in names}
            return func(*args, **kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def extractor_options(func):
    """Options shared by every command that extracts features."""
    options = [
        click.option("--features", "features", default="aliked", show_default=True, callback=known_features,
                     help="Extractor: aliked (aliked-n16), aliked-n16rot, aliked-n32, aliked-t16, disk, superpoint, "
                          "sift, xfeat."),
        click.option("--max-keypoints", type=SizeOrOriginal("no cap"), default=None,
                     help="Keypoints per image (default: 2048; 4096 for xfeat; -1: no cap)."),
        click.option("--resize", type=SizeOrOriginal("the original size", MAX_RESIZE), default=DEFAULT_RESIZE,
                     show_default=True,
                     help="Long side of the image given to the network (-1: original size). Keypoints are "
                          "reported in original-image pixels."),
        click.option("--upsample/--no-upsample", default=True,
                     help="Enlarge images smaller than --resize to it, as LightGlue does (default), or keep them at "
                          "their size (--resize is then an upper bound, as hloc's resize_max; presets do this)."),
        click.option("--detection-threshold", type=FiniteFloatRange(min=0), default=None,
                     help="Detection score threshold (extractor's default when omitted)."),
        click.option("--aliked-nms", type=click.Choice(["reference", "strict"]), default="reference",
                     show_default=True,
                     help="ALIKED keypoint NMS: the reference's (what LightGlue was trained on) or kornia's strict "
                          "local maxima."),
        click.option("--weights", "extractor_weights", type=ExistingPath("weights file", dir_okay=False), default=None,
                     help="Extractor weights file (default: resolved from the registry)."),
        click.option("--device", type=Device(), default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--backend", type=click.Choice(["torch", "openvino", "onnxruntime"]), default="torch",
                     show_default=True,
                     help="Runtime of DISK's network: openvino (CPU, pip install \"lightmatch[openvino]\") is 1.4x "
                          "faster in fp32 and 2.3x with --precision bf16 (docs/benchmarks.md). onnxruntime (pip "
                          "install \"lightmatch[onnx]\"): extractor and matcher exported to ONNX (once, cached) and "
                          "run by ONNX Runtime (ALIKED, DISK, SuperPoint or XFeat; LightGlue, LighterGlue or nn; "
                          "docs/onnx.md)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def matcher_options(func):
    """Options shared by every command that matches."""
    options = [
        click.option("--matcher", default="lightglue", show_default=True,
                     type=click.Choice(["lightglue", "superglue", "nn"]), help="Matcher."),
        click.option("--depth-confidence", type=Confidence(), default=None,
                     help="LightGlue early exit, -1 disables adaptive depth (default 0.95; LighterGlue -1)."),
        click.option("--width-confidence", type=Confidence(), default=None,
                     help="LightGlue point pruning, -1 disables adaptive width (default 0.99; LighterGlue 0.95)."),
        click.option("--filter-threshold", type=Fraction(), default=None,
                     help="Minimum match confidence (LightGlue 0.1, SuperGlue 0.2)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                     show_default=True,
                     help="Arithmetic of the extractor and matcher. auto: fp32 on the CPU (the reference's "
                          "numbers), fp16 autocast for LightGlue and SuperGlue on CUDA; bf16 halves DISK's CPU time "
                          "(95 percent of its keypoints within 1 px of fp32)"),
        click.option("--compile", "compile_matcher", is_flag=True,
                     help="torch.compile LightGlue's layers (worth it on CUDA for long runs)."),
        click.option("--sinkhorn-iterations", type=click.IntRange(min=1), default=None,
                     help="SuperGlue Sinkhorn iterations (100)."),
        click.option("--superglue-weights", type=click.Choice(["indoor", "outdoor"]), default="outdoor",
                     show_default=True, help="SuperGlue weights."),
        click.option("--ratio-threshold", type=Fraction(open_low=True), default=None,
                     help="NN matcher: Lowe ratio test."),
        click.option("--distance-threshold", type=POSITIVE_FLOAT, default=None,
                     help="NN matcher: max descriptor distance."),
        click.option("--matcher-weights", type=ExistingPath("weights file", dir_okay=False), default=None,
                     help="Matcher weights file (default: resolved from the registry)."),
        click.option("--rotation-search/--no-rotation-search", default=False,
                     help="Extract every image at 0/90/180/270 degrees and match each pair at the quarter turn with "
                          "most verified inliers: for in-plane rotations upright features miss (4x the extraction "
                          "and matching; see also --features aliked-n16rot)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def model_spec(opts: dict):
    """The :class:`~lightmatch.pipeline.spec.ModelSpec` of the parsed :func:`extractor_options` and
    :func:`matcher_options` (absent ones at their defaults)."""
    from ..pipeline.spec import ModelSpec

    features = opts["features"]
    extractor = {"max_keypoints": opts.get("max_keypoints"), "resize": opts.get("resize"),
                 "upsample": opts.get("upsample", True), "detection_threshold": opts.get("detection_threshold")}
    if features.startswith("aliked"):
        extractor["nms"] = opts.get("aliked_nms")
    name = opts.get("matcher", "lightglue")
    matcher: dict[str, Any] = {}
    if name == "lightglue":
        matcher = {"depth_confidence": opts.get("depth_confidence"), "width_confidence": opts.get("width_confidence"),
                   "filter_threshold": opts.get("filter_threshold"), "compile": opts.get("compile_matcher") or None}
    elif name == "superglue":
        matcher = {"variant": opts.get("superglue_weights"), "sinkhorn_iterations": opts.get("sinkhorn_iterations"),
                   "match_threshold": opts.get("filter_threshold")}
    elif name == "nn":
        matcher = {"ratio_threshold": opts.get("ratio_threshold"), "distance_threshold": opts.get("distance_threshold")}
    return ModelSpec(features, name, opts.get("extractor_weights"), opts.get("matcher_weights"), extractor, matcher,
                     opts.get("precision") or "auto", opts.get("device", "auto"), opts.get("backend") or "torch",
                     bool(opts.get("rotation_search")))


def extractor_spec(spec):
    """``spec`` for its extractor alone: the nearest-neighbour matcher, free and unused, in place of its matcher."""
    return spec.replace(matcher="nn", matcher_weights=None, matcher_settings={})


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
