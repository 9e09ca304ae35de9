"""``lightmatch store``: describe, verify and compact an output folder's features.h5/matches.h5."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from .common import EXIT_ERROR, ExistingPath, main

FOLDER = click.argument("folder", type=ExistingPath("output folder", file_okay=False))
JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")


@main.group("store")
def store_group() -> None:
    """Inspect, verify and compact an output folder (features.h5, matches.h5 and their shards/).

    \b
    lightmatch store info out
    lightmatch store check out --drop     # remove damaged shards; the next run redoes their work
    lightmatch store compact out -o plain # plain single-file hloc stores
    """


@store_group.command("info")
@FOLDER
@JSON
def info_command(folder: str, as_json: bool) -> None:
    """Images, pairs, shards, size on disk and settings of FOLDER."""
    from ..io.maintenance import store_info

    info = store_info(folder)
    if as_json:
        click.echo(json.dumps({"type": "store_info", **dataclasses.asdict(info)}))
        return
    click.echo(f"{info.folder}: {info.layout} store, {info.images} images, {info.pairs} pairs, {info.shards} shards, "
               f"{info.size_bytes / 1e6:.1f} MB" + (f", {info.parts} parts of an unfinished run" if info.parts else ""))
    for kind, attrs in info.settings.items():
        click.echo(f"  {kind}: " + " ".join(f"{k[len('lightmatch_'):]}={v}" for k, v in attrs.items()))


@store_group.command("check")
@FOLDER
@click.option("--drop", is_flag=True,
              help="Remove damaged shards and rebuild the top files, so the next run redoes their work.")
@JSON
def check_command(folder: str, drop: bool, as_json: bool) -> None:
    """Read every shard and follow every link of FOLDER's top files. Exit 1 when damage is found (and not
    dropped)."""
    from ..io.maintenance import check_store

    result = check_store(folder, drop=drop)
    if as_json:
        click.echo(json.dumps({"type": "store_check", "ok": result.ok, **dataclasses.asdict(result)}))
    else:
        for line in result.damaged:
            click.echo(f"damaged: {line}")
        for path in result.dropped:
            click.echo(f"dropped: {path}")
        click.echo(f"{result.folder}: {result.shards_checked} shards, {result.items_checked} links checked, "
                   f"{len(result.damaged)} problems" + (f", {len(result.dropped)} shards dropped" if drop else ""))
    if not result.ok and not drop:
        sys.exit(EXIT_ERROR)


@store_group.command("compact")
@FOLDER
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder for the single-file features.h5 and matches.h5 (each written atomically).")
@JSON
def compact_command(folder: str, output: str, as_json: bool) -> None:
    """Write FOLDER's stores as plain single-file hloc stores (no external links) into OUTPUT."""
    from ..io.maintenance import compact_store

    written = compact_store(folder, output)
    if as_json:
        click.echo(json.dumps({"type": "store_compact", "files": written}))
    else:
        for path in written:
            click.echo(path)
