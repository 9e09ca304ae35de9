"""lightmatch.io.lock: one writer per folder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from lightmatch.errors import OutputError
from lightmatch.io.lock import LOCK_FILE, FolderLock


def test_the_holder_is_named_and_the_lock_file_goes_with_the_lock(tmp_path):
    first = FolderLock(tmp_path)
    first.acquire()
    assert first.held and (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    second = FolderLock(tmp_path, advice="try later")
    message = rf"{tmp_path}: another lightmatch run \(pid {os.getpid()}\) is writing to this folder; try later"
    with pytest.raises(OutputError, match=message):
        second.acquire()
    with pytest.raises(OutputError, match=message):
        second.check_free()
    first.release()
    assert not first.held and not (tmp_path / LOCK_FILE).exists()
    second.check_free()  # creates nothing
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_waiting_writer_gets_the_lock_when_it_is_released(tmp_path):
    first = FolderLock(tmp_path)
    first.acquire()
    releaser = threading.Timer(0.3, first.release)
    releaser.start()
    second = FolderLock(tmp_path, wait=30)
    second.acquire()
    releaser.join()
    assert second.held and (tmp_path / LOCK_FILE).exists()
    second.release()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    """flock dies with its process: a lock file naming a dead pid is taken over (and names the new holder)."""
    code = ("import os, sys; from lightmatch.io.lock import FolderLock; FolderLock(sys.argv[1]).acquire(); "
            "os._exit(0)")  # exits holding the lock, without releasing it: the file stays
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / LOCK_FILE).exists()
    lock = FolderLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()
