"""``lightmatch weights``: list known models and where their files are; download them."""

from __future__ import annotations

import json

import click

from .common import main


@main.group()
def weights() -> None:
    """Pretrained weights: what is known, what is here, and fetching what is not."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model.")
def list_cmd(as_json: bool) -> None:
    """Every known model: available locally or not, where, size, licence."""
    from ..weights_download import list_weights

    rows = list_weights()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    click.echo(f"{'name':22} {'here':5} {'size':>9}  {'licence':45} path")
    for row in rows:
        size = f"{row['size'] / 1e6:.1f} MB" if row.get("size") else "-"
        click.echo(f"{row['name']:22} {'yes' if row['available'] else 'no':5} {size:>9}  {row['licence']:45} "
                   f"{row['path'] or '-'}")


def _known_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from ..weights import REGISTRY

    unknown = [name for name in value if name not in REGISTRY and name != "all"]
    if unknown:
        raise click.BadParameter(f"unknown weights {unknown[0]!r}: known are {', '.join(REGISTRY)}, or all", ctx,
                                 param)
    return value


def _digest(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise click.BadParameter(f"{value!r} is not a sha256 digest (64 hexadecimal digits)", ctx, param)
    return value


def _url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from urllib.parse import urlsplit

    if value is not None and urlsplit(value).scheme.lower() not in ("http", "https", "file"):
        raise click.BadParameter(f"{value!r} is not an http(s) URL", ctx, param)
    return value


@weights.command("download")
@click.argument("names", nargs=-1, required=True, callback=_known_names)
@click.option("--force", is_flag=True, help="Download even when a valid file is already there.")
@click.option("--url", default=None, callback=_url,
              help="Download from this http(s) URL instead of the registry's (one name only); file:// URLs are "
                   "refused unless --trust-unverified is given.")
@click.option("--sha256", default=None, metavar="HEX", callback=_digest,
              help="Expected sha256 of the file (one name only); needed for files with no known digest. Recorded "
                   "beside the file (NAME.sha256): every later load checks it.")
@click.option("--trust-unverified", is_flag=True,
              help="Install a file with no known digest as it arrives, or from a file:// URL; its sha256 is printed "
                   "and recorded.")
def download_cmd(names: tuple[str, ...], force: bool, url: str | None, sha256: str | None,
                 trust_unverified: bool) -> None:
    """Download NAME... (or 'all') into the user cache, checksum-verified, written atomically.

    SuperPoint and SuperGlue weights are under Magic Leap's non-commercial licence: research use only.
    """
    from tqdm import tqdm

    from ..weights import MAGICLEAP, REGISTRY, recorded_sha256_path, spec_for
    from ..weights_download import download

    selected = list(REGISTRY) if names == ("all",) else list(names)
    if (url or sha256) and len(selected) != 1:
        raise click.UsageError("--url and --sha256 take exactly one NAME")
    if url and url.lower().startswith("file:") and not trust_unverified:
        raise click.UsageError(f"--url {url}: file:// URLs are refused unless --trust-unverified is given")
    for name in selected:
        spec = spec_for(name)
        if spec.licence == MAGICLEAP:
            click.echo(f"note: {name} is licensed by Magic Leap for non-commercial research use only "
                       "(see github.com/magicleap/SuperGluePretrainedNetwork/blob/master/LICENSE)", err=True)
        with tqdm(desc=name, unit="B", unit_scale=True, disable=None, leave=False) as bar:
            def progress(done: int, total: int | None) -> None:
                bar.total = total
                bar.update(done - bar.n)

            path = download(name, url=url, progress=progress, force=force, sha256=sha256,
                            trust_unverified=trust_unverified)
        if sha256 is None and not spec.verifiable:
            click.echo(f"warning: {name} is not verified; recorded sha256 "
                       f"{recorded_sha256_path(path).read_text().split()[0]}", err=True)
        click.echo(f"{name}: {path}")
