"""Downloading registry weights into the cache, and listing what is known and present.

A download goes to a temporary file beside the target, is checked against the registry's sha256 (when known), and
is renamed into place atomically: whatever happens (offline, HTTP error, bad checksum, a transfer cut short,
Ctrl-C), no partial file is left under the target's name or as a leftover temporary. Failures raise
:class:`~lightmatch.errors.WeightsError` with a one-line message. The library never prints: progress is reported
through a callback.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from . import weights
from .errors import WeightsError
from .io.atomic import atomic_output

ProgressCallback = Callable[[int, Optional[int]], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` after each block (and once at the start)."""

_BLOCK = 1 << 16


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _manual_hint(url: str, target: Path, name: str) -> str:
    return (f"download {url} by hand and place it at {target} or in $LIGHTMATCH_WEIGHTS_DIR, "
            f"or pass {weights.flag_for(name)} PATH")


def _open(url: str, name: str, target: Path, timeout: float):
    """Open ``url``; map connection failures to one-line :class:`WeightsError`s."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "lightmatch"}),
                                      timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"cannot download weights '{name}' from {url}: HTTP {exc.code} "
                           f"{_one_line(exc.reason)}") from None
    except urllib.error.URLError as exc:
        host = urllib.parse.urlsplit(url).hostname or url
        raise WeightsError(f"cannot download weights '{name}': offline or {host} unreachable "
                           f"({_one_line(exc.reason)}); {_manual_hint(url, target, name)}") from None
    except (TimeoutError, socket.timeout, OSError, http.client.HTTPException) as exc:
        host = urllib.parse.urlsplit(url).hostname or url
        raise WeightsError(f"cannot download weights '{name}': offline or {host} unreachable "
                           f"({type(exc).__name__}: {_one_line(exc) or 'no reply'}); "
                           f"{_manual_hint(url, target, name)}") from None
    except ValueError as exc:  # malformed URL
        raise WeightsError(f"cannot download weights '{name}': bad URL {url!r} ({_one_line(exc)})") from None


def _record(target: Path, sha256: str) -> None:
    """Write ``target``'s sha256 beside it (``sha256sum`` format), which every later load checks."""
    try:
        with atomic_output(weights.recorded_sha256_path(target), "the weights digest") as record:
            record.write_text(f"{sha256}  {target.name}\n")
    except OSError as exc:
        raise WeightsError(f"{weights.recorded_sha256_path(target)}: cannot record the digest "
                           f"({_one_line(exc.strerror or exc)})") from None


def download(
    name: str,
    dest_dir: Optional[str | os.PathLike] = None,
    url: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    force: bool = False,
    timeout: float = 30.0,
    sha256: Optional[str] = None,
    trust_unverified: bool = False,
) -> Path:
    """Download the weights ``name`` of the registry and return the path of the file.

    Args:
        name: registry name (see :data:`lightmatch.weights.REGISTRY`).
        dest_dir: target folder; default the user cache (:func:`lightmatch.weights.cache_dir`).
        url: override of the registry's URL (e.g. a mirror); the registry's digests still apply.
        progress: ``progress(done, total)`` callback; ``total`` is None when the server does not say.
        force: download even when a valid file is already there.
        timeout: seconds to wait for the connection and for each read.
        sha256: the expected sha256 (from a source the user trusts), checked besides the registry's digests and
            recorded beside the file (:func:`lightmatch.weights.recorded_sha256_path`): every later load checks it.
        trust_unverified: install a file for which no digest is known (neither ``sha256`` nor the registry's);
            its sha256 is recorded beside it so that later loads check it. Without it such a download is refused
            before anything is fetched. Also needed for a ``file://`` URL (other schemes than http(s) are
            refused).

    Raises:
        WeightsError: offline or unreachable host, HTTP error, transfer cut short, checksum mismatch, or the
            folder cannot be written, or no digest is known and ``trust_unverified`` is not set. No partial file
            remains in any of these cases.
    """
    spec = weights.spec_for(name)
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise WeightsError(f"--sha256 {sha256!r}: not a sha256 digest (64 hexadecimal digits)")
    if sha256 is None and not spec.verifiable and not trust_unverified:
        raise WeightsError(f"no digest is known for weights '{name}', so a download cannot be verified: pass "
                           f"--sha256 HEX from a source you trust, or --trust-unverified to record what arrives")
    url = url or spec.url
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file" and not trust_unverified:
        raise WeightsError(f"{url}: file:// URLs are refused (a local file may be anything); pass "
                           "--trust-unverified to install it anyway, its sha256 checked and recorded")
    if scheme not in ("https", "http", "file"):
        raise WeightsError(f"{url}: not an http(s) URL")
    folder = Path(dest_dir) if dest_dir is not None else weights.cache_dir()
    target = folder / spec.filename

    if target.is_file() and not force and weights.mismatch(spec, target, sha256) is None:
        if sha256 is not None:
            _record(target, sha256.lower())
        return target

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot write the weights folder ({_one_line(exc.strerror or exc)}); "
                           f"set $LIGHTMATCH_CACHE_DIR to a writable folder") from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            response = _open(url, name, target, timeout)
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                if progress is not None:
                    progress(done, total)
                while True:
                    try:
                        block = response.read(_BLOCK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise WeightsError(
                            f"download of weights '{name}' from {url} interrupted after {done} bytes "
                            f"({type(exc).__name__}: {_one_line(exc) or 'connection lost'}); nothing was kept, "
                            f"run the download again") from None
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise WeightsError(f"{folder}: cannot write weights '{name}' "
                                           f"({_one_line(exc.strerror or exc)})") from None
                    digest.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done != total:
                raise WeightsError(f"download of weights '{name}' from {url} interrupted after {done} of {total} "
                                   f"bytes; nothing was kept, run the download again")
            if done == 0:
                raise WeightsError(f"download of weights '{name}' from {url} returned an empty file")
            out.flush()
            os.fsync(out.fileno())
        reason = weights.mismatch(spec, tmp, sha256)
        if reason is not None:
            raise WeightsError(f"checksum mismatch for weights '{name}' downloaded from {url} ({reason}); "
                               f"nothing was kept")
        recorded = weights.recorded_sha256_path(target)
        recorded.unlink(missing_ok=True)  # an old record must not judge the new file
        os.replace(tmp, target)
        if sha256 is not None or not spec.verifiable:  # every later load checks the file against this record
            _record(target, digest.hexdigest())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def list_weights() -> list[dict]:
    """Every registry entry with where it stands locally.

    Returns:
        one dict per model, in registry order, with ``name``, ``filename``, ``available`` (bool), ``path``
        (the file found, else where a download would put it), ``source`` (where it was found, or None),
        ``size`` (bytes, or None), ``licence``, ``description``, ``url``, ``sha256``.
    """
    rows = []
    for name, spec in weights.REGISTRY.items():
        found_path, source = None, None
        for where, path in weights.candidate_paths(name):
            if path.is_file():
                found_path, source = path, where
                break
        rows.append({
            "name": name,
            "filename": spec.filename,
            "available": found_path is not None,
            "path": str(found_path if found_path is not None else weights.cache_dir() / spec.filename),
            "source": source,
            "size": found_path.stat().st_size if found_path is not None else None,
            "licence": spec.licence,
            "description": spec.description,
            "url": spec.url,
            "sha256": spec.sha256,
        })
    return rows
