"""The one check every input file passes before it is opened: it exists and is a regular file. A FIFO, socket or
device would block ``open`` or never end a read, so it is refused by its ``stat`` alone, which never blocks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import InputError


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a :class:`Path`; :class:`InputError` naming it when it is missing, a folder, or not a regular
    file (FIFO, socket, device)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what if what.endswith(' file') else 'file'}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise InputError(f"{path}: is {kind}, not a regular {what}; lightmatch reads only regular files")
    return path
