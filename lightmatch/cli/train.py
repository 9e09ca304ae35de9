"""``lightmatch train``: train or fine-tune LightGlue / SuperGlue on homographies of image folders."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import click

from ..errors import ConfigError
from ..train.config import (
    FLOAT_LIMITS,
    INT_LIMITS,
    PATCH_LIMITS,
    TRAIN_PRECISIONS,
    TRAINABLE,
    TrainConfig,
    check_run_folder,
    find_images,
    parse_patch,
    split_images,
    total_steps,
)
from .common import main

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _config(opts: dict[str, Any]) -> TrainConfig:
    values: dict[str, Any] = {}
    path = opts.pop("config_file_path")
    if path is not None:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the training config ({exc})") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: not a training config (a JSON object of settings)")
        values.pop("total_steps", None)
    for key, value in opts.items():  # options given on the command line override the file
        if value is not None and value != ():
            values[key] = list(value) if isinstance(value, tuple) and key == "images" else value
    return TrainConfig.from_dict(values)


def _ints(name: str) -> str:
    low, high = INT_LIMITS[name]
    return f"{low}-{high}"


def _floats(name: str) -> str:
    low, high, open_low = FLOAT_LIMITS[name]
    return f"{'>' if open_low else '>='} {low:g}, <= {high:g}"


class _Stop:
    """SIGINT / SIGTERM: the first asks the run to stop after its current step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for s in STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        click.echo(f"lightmatch: {signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                   "(Ctrl-C again stops at once, losing the steps since the last checkpoint)", err=True)

    def __call__(self) -> bool:
        return self.signum is not None


@main.command("train")
@click.option("--matcher", type=click.Choice(["lightglue", "superglue"]), default=None,
              help="Matcher to train (default lightglue; superglue needs --features superpoint).")
@click.option("--features", default=None,
              help=f"Frozen extractor: {', '.join(TRAINABLE)} (default aliked). These have a LightGlue configuration "
                   "(XFeat: LighterGlue); aliked-t16 has none.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="The extractor's weights file (official key layout), e.g. SuperPoint's superpoint_v1.pth.")
@click.option("--images", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Image folder, searched recursively; repeat for several folders.")
@click.argument("more_images", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None, help="Run directory (RUNDIR).")
@click.option("--steps", type=int, default=None, help=f"Optimisation steps ({_ints('steps')}).")
@click.option("--epochs", type=float, default=None, help="Epochs over the training images (instead of --steps).")
@click.option("--batch-size", type=int, default=None,
              help=f"Pairs per step (default 4; glue-factory 128; {_ints('batch_size')}).")
@click.option("--lr", type=float, default=None, help=f"Adam learning rate (default 1e-4; {_floats('lr')}).")
@click.option("--init", default=None,
              help="scratch, official or a weights PATH such as RUNDIR/matcher.pth (default scratch).")
@click.option("--n-layers", type=int, default=None,
              help=f"Transformer layers (default: the official depth, 9; LighterGlue 6; {_ints('n_layers')}).")
@click.option("--num-keypoints", type=int, default=None,
              help=f"Keypoints per image (default 512; {_ints('num_keypoints')}).")
@click.option("--patch-size", default=None,
              help=f"Size of the training crops, WxH, each side a multiple of {PATCH_LIMITS[2]} in "
                   f"{PATCH_LIMITS[0]}-{PATCH_LIMITS[1]} (default 640x480, the recipe's).")
@click.option("--val-every", type=int, default=None, help="Validate every K steps (default 100).")
@click.option("--val-pairs", type=int, default=None,
              help=f"Validation pairs (default 16; {_ints('val_pairs')}; 0: no validation, the last model is "
                   "exported).")
@click.option("--checkpoint-every", type=int, default=None, help="Write RUNDIR/last.pth every K steps (default 100).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto).")
@click.option("--precision", type=click.Choice(TRAIN_PRECISIONS), default=None,
              help="fp32 (default), fp16 (CUDA autocast + GradScaler) or bf16 autocast.")
@click.option("--gradient-checkpointing", "checkpointing", is_flag=True, default=None,
              help="Recompute layer activations in the backward pass (less memory).")
@click.option("--seed", type=int, default=None,
              help=f"Seed of the data, augmentation and initialisation (default 0; {_ints('seed')}).")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder, reused by runs with the same extractor settings and data.")
@click.option("--config", "config_file_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON file with any of these settings (e.g. a RUNDIR/config.json); options override it.")
@click.option("--resume", is_flag=True, help="Continue the run in RUNDIR from RUNDIR/last.pth.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def train_command(more_images: tuple[str, ...], quiet: bool, resume: bool, **opts: Any) -> None:
    """Train LightGlue or SuperGlue on pairs warped by random homographies from image folders (glue-factory's recipe).

    \b
    lightmatch train --matcher lightglue --features aliked --images imgs/ -o run --steps 1000
    lightmatch match a.jpg b.jpg --matcher-weights run/matcher.pth

    \b
    On a CPU the defaults (9 layers, 512 keypoints, 640x480 crops) run at about 0.5 pairs/s. Measured CPU recipe:
    a 3-layer matcher from scratch, about 11 minutes of one core, held-out match precision 72 % at recall 58 %
    (docs/training.md):
    lightmatch train --images DIR -o run --n-layers 3 --num-keypoints 256 --patch-size 320x240 --steps 500
      --batch-size 2 --lr 5e-4 --val-every 100 --val-pairs 8
    """
    opts["images"] = tuple(opts["images"]) + more_images
    if opts["patch_size"] is not None:
        try:
            opts["patch_size"] = parse_patch(opts["patch_size"])
        except ValueError:
            raise click.BadParameter(f"expected WxH, e.g. 640x480; got {opts['patch_size']!r}",
                                     param_hint="--patch-size") from None
    if resume:
        if not opts.get("output"):
            raise click.UsageError("--resume needs -o RUNDIR, the run to continue")
        check_run_folder(opts["output"], resume=True)
        saved = Path(opts["output"]) / "config.json"
        if opts["config_file_path"] is None and saved.is_file():
            opts["config_file_path"] = str(saved)
    config = _config(opts)
    config.check()
    check_run_folder(config.output, resume)
    train_images, val_images = split_images(find_images(config.images), config.val_fraction, config.seed)
    steps = total_steps(config, len(train_images))
    say = (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))
    pairs = f"{config.batch_size} pair{'s' if config.batch_size > 1 else ''}"
    say(f"lightmatch train: {config.output}: {len(train_images) + len(val_images)} images ({len(train_images)} "
        f"training, {len(val_images)} validation); {steps} steps of {pairs}; loading the {config.features} "
        f"extractor and the {config.matcher} matcher ...")
    from ..train.loop import TrainingStopped, train

    bars: dict[str, Any] = {}

    def bar(name: str, total: int, unit: str):
        if name not in bars:
            for other in list(bars):
                bars.pop(other).close()
            from tqdm import tqdm

            bars[name] = tqdm(total=total, file=sys.stderr, unit=unit, desc=name, dynamic_ncols=True)
        return bars[name]

    def progress(info: dict[str, Any]) -> None:
        if quiet:
            return
        if info["event"] == "prepare":
            cache = f" in {info['cache']}" if info["cache"] else " (no --cache: extracted as needed)"
            start = f"from step {info['start']}, " if info["start"] else ""
            say(f"features: {info['extractor']}, {info['keypoints']} keypoints per image, on {info['device']}; "
                f"{start}{info['train_pairs']} training pairs ({info['train_cached']} cached) and "
                f"{info['val_pairs']} validation pairs ({info['val_cached']} cached){cache}")
        elif info["event"] == "features":
            b = bar(info["what"], info["total"], "pair")
            b.n = info["done"]
            b.refresh()
        else:
            b = bar("training", info["total"], "step")
            b.n = info["step"]
            b.set_postfix(loss=f"{info['loss']:.3f}", lr=f"{info['lr']:.1e}", pairs_s=f"{info['pairs_per_s']:.2f}",
                          refresh=False)
            b.refresh()

    stop = _Stop()
    try:
        with stop:
            summary = train(config, resume=resume, progress=progress, should_stop=stop)
    except TrainingStopped as exc:
        for b in bars.values():
            b.close()
        bars.clear()
        click.echo(f"lightmatch: {exc}", err=True)
        sys.exit(128 + (stop.signum or signal.SIGINT))
    finally:
        for b in bars.values():
            b.close()
    if config.val_pairs:
        click.echo(f"trained {summary['steps']} steps; best validation loss {summary['best_val_loss']:.4f}")
    else:
        click.echo(f"trained {summary['steps']} steps (no validation: --val-pairs 0; the last model is exported)")
    for key in ("precision", "recall", "auc@1px", "auc@3px", "auc@5px"):
        if key in summary:
            click.echo(f"  {key}: {summary[key]:.1f}")
    if summary["weights"]:
        click.echo(f"weights: {summary['weights']} (lightmatch match --matcher-weights ...)")

