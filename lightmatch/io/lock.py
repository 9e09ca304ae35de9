"""One writer per folder: an exclusive advisory lock (``flock``) on a lock file inside it, holding the owner's pid.

Used by the output store (``OUTDIR/.lightmatch.lock``) and by training runs (``RUNDIR/.lightmatch.lock``). The lock
file is removed by its holder on release; a process that locked a file removed meanwhile locks the new one, so
two processes can never both believe they hold the folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from ..errors import OutputError

try:  # POSIX advisory locks; without them (Windows) two runs into one folder are not prevented
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_FILE = ".lightmatch.lock"


class FolderLock:
    """The lock of ``folder`` (the folder must exist). :meth:`acquire` waits up to ``wait`` seconds for another
    holder, then raises :class:`OutputError` naming the folder and the holder's pid; ``advice`` ends that message."""

    def __init__(self, folder: str | os.PathLike, wait: float = 0.0,
                 advice: str = "wait for it or choose another output folder") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.wait, self.advice = wait, advice
        self.fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def check_free(self) -> None:
        """Raise the :meth:`acquire` error when another process holds the lock now; creates nothing."""
        if fcntl is None:  # pragma: no cover
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(self._busy(_holder(fd))) from None
        finally:
            os.close(fd)

    def _busy(self, holder: str) -> str:
        return f"{self.folder}: another lightmatch run{holder} is writing to this folder; {self.advice}"

    def acquire(self) -> None:
        deadline = time.monotonic() + max(0.0, self.wait)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot create the lock file ({exc.strerror or exc})") from exc
            if fcntl is None:  # pragma: no cover
                self.fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise OutputError(self._busy(holder)) from None
                time.sleep(0.05)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file (while still holding it) and release the lock."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    """`` (pid N)`` from a held lock file, or nothing when it names no pid."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
