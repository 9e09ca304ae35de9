"""lightmatch.io.files: the regular-file check every input passes before it is opened (never blocking)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from lightmatch.errors import InputError
from lightmatch.io.files import check_regular_file


def test_a_regular_file_passes_as_a_path(tmp_path):
    (tmp_path / "pairs.txt").write_text("a b\n")
    got = check_regular_file(str(tmp_path / "pairs.txt"), "pairs file")
    assert isinstance(got, Path) and got == tmp_path / "pairs.txt"
    (tmp_path / "empty").write_bytes(b"")
    assert check_regular_file(tmp_path / "empty") == tmp_path / "empty"  # empty is a reader's problem, not ours


@pytest.mark.parametrize("what, message", [("pairs file", "no such pairs file"), ("image", "no such file"),
                                           ("file", "no such file")])
def test_missing(tmp_path, what, message):
    with pytest.raises(InputError, match=f"^{tmp_path / 'gone.txt'}: {message}$"):
        check_regular_file(tmp_path / "gone.txt", what)


def test_a_directory(tmp_path):
    with pytest.raises(InputError, match=f"^{tmp_path}: is a directory, not a homography file$"):
        check_regular_file(tmp_path, "homography file")


def test_a_path_through_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'file' / 'x'}: cannot read \(Not a directory\)$"):
        check_regular_file(tmp_path / "file" / "x")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX FIFOs and sockets")
def test_a_fifo_and_a_socket_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block until a writer comes
    with pytest.raises(InputError, match=f"^{tmp_path / 'fifo'}: is a FIFO, not a regular pairs file; lightmatch "
                                         "reads only regular files$"):
        check_regular_file(tmp_path / "fifo", "pairs file")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(InputError, match="is a socket, not a regular file"):
            check_regular_file(tmp_path / "sock")


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="POSIX devices")
def test_a_device_is_refused():
    with pytest.raises(InputError, match="^/dev/null: is a device, not a regular image"):
        check_regular_file("/dev/null", "image")
