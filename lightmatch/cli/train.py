"""``lightmatch train``: train or fine-tune LightGlue / SuperGlue on homographies of image folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError
from .common import main

if TYPE_CHECKING:
    from ..train.loop import TrainConfig


def _config(opts: dict[str, Any]) -> TrainConfig:
    from ..train.loop import TrainConfig

    values: dict[str, Any] = {}
    if opts.pop("config_file"):
        path = Path(opts["config_file_path"])
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the training config ({exc})") from exc
        values.pop("total_steps", None)
    opts.pop("config_file_path")
    for key, value in opts.items():  # options given on the command line override the file
        if value is not None and value != ():
            values[key] = list(value) if isinstance(value, tuple) and key == "images" else value
    return TrainConfig.from_dict(values)


@main.command("train")
@click.option("--matcher", type=click.Choice(["lightglue", "superglue"]), default=None,
              help="Matcher to train (default lightglue).")
@click.option("--features", default=None, help="Frozen extractor: aliked, disk, superpoint, sift (default aliked).")
@click.option("--images", multiple=True, type=click.Path(file_okay=False),
              help="Image folder, searched recursively; repeat for several folders.")
@click.argument("more_images", nargs=-1, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None, help="Run directory (RUNDIR).")
@click.option("--steps", type=int, default=None, help="Optimisation steps.")
@click.option("--epochs", type=float, default=None, help="Epochs over the training images (instead of --steps).")
@click.option("--batch-size", type=int, default=None, help="Pairs per step (default 4; glue-factory 128).")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default 1e-4).")
@click.option("--init", default=None, help="scratch, official or a weights PATH (default scratch).")
@click.option("--n-layers", type=int, default=None, help="Transformer layers (default 9, the official depth).")
@click.option("--num-keypoints", type=int, default=None, help="Keypoints per image (default 512).")
@click.option("--patch-size", default=None, help="Size of the training crops, WxH (default 640x480, the recipe's).")
@click.option("--val-every", type=int, default=None, help="Validate every K steps (default 100).")
@click.option("--val-pairs", type=int, default=None, help="Validation pairs (default 16).")
@click.option("--checkpoint-every", type=int, default=None, help="Write RUNDIR/last.pth every K steps (default 100).")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="fp32 (default), fp16 (CUDA autocast + GradScaler) or bf16 autocast.")
@click.option("--gradient-checkpointing", "checkpointing", is_flag=True, default=None,
              help="Recompute layer activations in the backward pass (less memory).")
@click.option("--seed", type=int, default=None, help="Seed of the data, augmentation and initialisation (default 0).")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder, reused by runs with the same extractor settings and data.")
@click.option("--config", "config_file_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON file with any of these settings (e.g. a RUNDIR/config.json); options override it.")
@click.option("--resume", is_flag=True, help="Continue the run in RUNDIR from RUNDIR/last.pth.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_command(more_images: tuple[str, ...], quiet: bool, resume: bool, **opts: Any) -> None:
    """Train LightGlue or SuperGlue on pairs warped by random homographies from image folders (glue-factory's recipe).

    \b
    lightmatch train --matcher lightglue --features aliked --images imgs/ -o run --steps 1000
    lightmatch match a.jpg b.jpg --matcher-weights run/matcher.pth
    """
    from ..train.loop import train

    opts["images"] = tuple(opts["images"]) + more_images
    if opts["patch_size"] is not None:
        try:
            opts["patch_size"] = tuple(int(v) for v in opts["patch_size"].lower().split("x"))
        except ValueError:
            raise click.BadParameter("expected WxH, e.g. 640x480", param_hint="--patch-size") from None
    opts["config_file"] = opts["config_file_path"] is not None
    if resume and opts["config_file_path"] is None and opts.get("output"):
        saved = Path(opts["output"]) / "config.json"
        if saved.is_file():
            opts["config_file"], opts["config_file_path"] = True, str(saved)
    config = _config(opts)
    if not config.images:
        raise click.UsageError("give at least one image folder (--images DIR)")
    bar = None

    def progress(info: dict[str, Any]) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:  # created at the first step, so that setup errors print alone
            from tqdm import tqdm

            bar = tqdm(total=info["total"], file=sys.stderr, unit="step", dynamic_ncols=True)
        bar.n = info["step"]
        bar.set_postfix(loss=f"{info['loss']:.3f}", lr=f"{info['lr']:.1e}", pairs_s=f"{info['pairs_per_s']:.2f}",
                        refresh=False)
        bar.refresh()

    try:
        summary = train(config, resume=resume, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"trained {summary['steps']} steps; best validation loss {summary['best_val_loss']:.4f}")
    for key in ("precision", "recall", "auc@1px", "auc@3px", "auc@5px"):
        if key in summary:
            click.echo(f"  {key}: {summary[key]:.1f}")
    click.echo(f"weights: {Path(summary['rundir']) / 'matcher.pth'} (lightmatch match --matcher-weights ...)")
