"""Atomic file replacement: write beside the target, then rename over it, so a reader (or a crash) never sees a
half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

ATOMIC_TEMPORARY = ".*.????????.tmp"
"""Glob of the temporary files :func:`atomic_output` writes (``.NAME.`` + mkstemp's 8 characters + ``.tmp``)."""

WRITE_ERRORS = (OSError, RuntimeError)
"""What a failed write raises: OSError (ENOSPC, EFBIG, EROFS, EACCES, ...) and h5py's and torch's RuntimeError."""


def write_error(path: str | os.PathLike, what: str, exc: BaseException) -> OutputError:
    """The one-line :class:`OutputError` for a failed write of ``what`` to ``path``."""
    reason = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    return OutputError(f"{path}: cannot write {what} ({reason[:200]})")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort; not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder. When the block succeeds, the file is flushed to disk, given the
    old file's permissions (or the usual 0666 less the umask), renamed over ``path``, and the rename made durable
    (the folder fsynced); otherwise it is removed and ``path`` is left as it was.

    A folder that cannot be created or written, and any write error in the block or while replacing (OSError,
    h5py's RuntimeError), raise a one-line :class:`OutputError` naming the file and ``what`` was written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write {what} here ({exc.strerror or exc})") from exc
    tmp = Path(name)
    try:
        try:
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            _copy_mode(tmp, path)
            os.replace(tmp, path)
        except WRITE_ERRORS as exc:
            raise write_error(path, what, exc) from exc
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_mode(tmp: Path, path: Path) -> None:
    """mkstemp creates files readable by their owner only: give the new file the permissions a plain write would."""
    try:
        if path.exists():
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
    except OSError:
        pass
