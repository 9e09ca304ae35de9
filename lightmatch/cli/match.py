"""``lightmatch match``: one pair, or batches from folders, pairs files and stdin."""

from __future__ import annotations

import json
from typing import Any, Optional

import click

from .common import extractor_options, format_pair_text, main, matcher_options, build_models


@main.command()
@click.argument("images", nargs=-1, type=click.Path())
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for features.h5 and matches.h5 (hloc layout).")
@click.option("--viz", "viz_path", type=click.Path(dir_okay=False), default=None,
              help="Write a match plot (PNG), matches coloured by confidence.")
@click.option("--homography", type=click.Path(dir_okay=False), default=None,
              help="Ground-truth 3x3 homography (text) image0 -> image1: report matches correct within 3 px.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per pair on stdout.")
@extractor_options
@matcher_options
def match(images: tuple[str, ...], output_dir: Optional[str], viz_path: Optional[str], homography: Optional[str],
          as_json: bool, **opts: Any) -> None:
    """Match IMAGE0 and IMAGE1.

    \b
    lightmatch match a.jpg b.jpg -o out --viz out/matches.png
    """
    from ..pipeline.match import check_inputs, match_pair, read_homography

    if len(images) != 2:
        raise click.UsageError("give exactly two images (IMAGE0 IMAGE1)")
    H = read_homography(homography) if homography else None
    check_inputs(list(images), output_dir)
    extractor, matcher = build_models(opts)
    result = match_pair(images[0], images[1], extractor, matcher, output_dir=output_dir, viz_path=viz_path,
                        homography=H)
    for warning in result.warnings:
        click.echo(f"lightmatch: warning: {warning}", err=True)
    summary = result.summary()
    click.echo(json.dumps(summary) if as_json else format_pair_text(summary))
