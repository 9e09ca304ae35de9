"""Image listing, pairing modes and hloc pairs files."""

from __future__ import annotations

import io
import os
import sys

import pytest

from lightmatch.errors import ConfigError, InputError, LightmatchError
from lightmatch.io.pairs import (
    exhaustive_pairs,
    format_pairs,
    list_images,
    parse_pairs,
    read_pairs,
    sequential_pairs,
    write_pairs,
)


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_list_images_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b.JPG", "a.png", "sub/c.jpeg", "sub/deeper/d.TiFf", "notes.txt", "sub/e.json", ".hidden.jpg",
                ".cache/f.jpg", "sub/._g.jpg"]:
        touch(tmp_path / rel)
    (tmp_path / "dir.jpg").mkdir()  # a folder named like an image is not an image
    assert list_images(tmp_path) == ["a.png", "b.JPG", "sub/c.jpeg", "sub/deeper/d.TiFf"]
    assert list_images(str(tmp_path / "sub")) == ["c.jpeg", "deeper/d.TiFf"]


def test_list_images_empty_and_missing(tmp_path):
    assert list_images(tmp_path) == []
    with pytest.raises(InputError, match="no such directory"):
        list_images(tmp_path / "nope")
    touch(tmp_path / "x.jpg")
    with pytest.raises(InputError, match="not a directory"):
        list_images(tmp_path / "x.jpg")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_list_images_symlink_cycle(tmp_path):
    touch(tmp_path / "a/x.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a/loop")
    assert list_images(tmp_path) == ["a/x.jpg"]


def test_exhaustive_pairs():
    assert exhaustive_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert exhaustive_pairs(["a"]) == []
    assert exhaustive_pairs(["a", "b", "a"]) == [("a", "b")]
    assert len(exhaustive_pairs([str(i) for i in range(10)])) == 45


def test_sequential_pairs_window():
    names = ["0", "1", "2", "3", "4"]
    assert sequential_pairs(names, window=1) == [("0", "1"), ("1", "2"), ("2", "3"), ("3", "4")]
    assert sequential_pairs(names, window=2) == [("0", "1"), ("0", "2"), ("1", "2"), ("1", "3"), ("2", "3"),
                                                 ("2", "4"), ("3", "4")]
    # a window at least the sequence length is exhaustive
    assert sorted(sequential_pairs(names, window=10)) == sorted(exhaustive_pairs(names))


def test_sequential_pairs_loop():
    names = ["0", "1", "2", "3", "4"]
    assert sequential_pairs(names, window=1, loop=True) == [("0", "1"), ("1", "2"), ("2", "3"), ("3", "4"),
                                                            ("4", "0")]
    looped = sequential_pairs(names, window=2, loop=True)
    assert set(looped) == {("0", "1"), ("0", "2"), ("1", "2"), ("1", "3"), ("2", "3"), ("2", "4"), ("3", "4"),
                           ("3", "0"), ("4", "0"), ("4", "1")}
    # wrapping never repeats a pair (in either order) nor pairs an image with itself
    for window in range(1, 8):
        pairs = sequential_pairs(names, window=window, loop=True)
        keys = [frozenset(p) for p in pairs]
        assert len(keys) == len(set(keys)) and all(len(k) == 2 for k in keys)
    assert len(sequential_pairs(names, window=4, loop=True)) == 10
    assert sequential_pairs(["a"], window=3, loop=True) == []


def test_sequential_pairs_bad_window():
    with pytest.raises(ConfigError):
        sequential_pairs(["a", "b"], window=0)


def test_format_write_read_roundtrip(tmp_path):
    pairs = [("a.jpg", "sub/b.jpg"), ("sub/b.jpg", "c.png")]
    assert format_pairs(pairs) == "a.jpg sub/b.jpg\nsub/b.jpg c.png\n"
    path = tmp_path / "out" / "pairs.txt"
    write_pairs(path, pairs)
    assert read_pairs(path) == pairs
    assert read_pairs(str(path)) == pairs
    assert [p.name for p in path.parent.iterdir()] == ["pairs.txt"]  # no temporary left behind


def test_format_rejects_whitespace_names():
    with pytest.raises(InputError, match="whitespace"):
        format_pairs([("my image.jpg", "b.jpg")])


def test_parse_comments_blank_extra_fields():
    lines = [
        "# a comment\n",
        "\n",
        "a.jpg b.jpg\n",
        "   \n",
        "  c.jpg\td.jpg  \r\n",
        "   # indented comment\n",
        # SuperGlue evaluation line: 2 names + rot0 rot1 + K0 (9) + K1 (9) + T_0to1 (16) = 38 fields
        "e.jpg f.jpg 0 0 " + " ".join(["1"] * 34) + "\n",
        "g.jpg h.jpg # trailing words are ignored\n",
    ]
    assert parse_pairs(lines, "pairs.txt") == [("a.jpg", "b.jpg"), ("c.jpg", "d.jpg"), ("e.jpg", "f.jpg"),
                                               ("g.jpg", "h.jpg")]
    assert parse_pairs([], "empty") == []


def test_parse_malformed_line_number():
    lines = ["# header", "a.jpg b.jpg", "", "lonely.jpg", "c.jpg d.jpg"]
    with pytest.raises(InputError) as info:
        parse_pairs(lines, "my_pairs.txt")
    message = str(info.value)
    assert message.startswith("my_pairs.txt:4:") and "lonely.jpg" in message and "\n" not in message


def test_read_pairs_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such pairs file"):
        read_pairs(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="directory"):
        read_pairs(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a b\n\xff\xfe\x00 c\n")
    with pytest.raises(InputError, match="UTF-8"):
        read_pairs(bad)
    short = tmp_path / "short.txt"
    short.write_text("a b\nc\n")
    with pytest.raises(LightmatchError, match=f"{short}:2:"):
        read_pairs(short)


def test_read_pairs_bom(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffa.jpg b.jpg\n".encode("utf-8"))
    assert read_pairs(path) == [("a.jpg", "b.jpg")]


def test_read_pairs_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("# from a pipe\nx.jpg y.jpg\ny.jpg z.jpg extra\n"))
    assert read_pairs("-") == [("x.jpg", "y.jpg"), ("y.jpg", "z.jpg")]
    monkeypatch.setattr(sys, "stdin", io.StringIO("x.jpg y.jpg\nz.jpg\n"))
    with pytest.raises(InputError, match="^<stdin>:2:"):
        read_pairs("-")


def test_names_are_relative_to_the_image_folder(tmp_path):
    from lightmatch.io.pairs import normalise_name, parse_pairs

    root = tmp_path / "imgs"
    assert normalise_name("./a//b.jpg", root) == "a/b.jpg"
    assert normalise_name(str(root / "sub" / "c.jpg"), root) == "sub/c.jpg"
    assert normalise_name("sub/../d.jpg", root) == "d.jpg"
    # images of other folders keep relative names, never absolute paths
    assert normalise_name("../x.jpg", root) == "../x.jpg"
    assert normalise_name("a/../../x.jpg", root) == "../x.jpg"
    assert normalise_name(str(tmp_path / "other" / "x.jpg"), root) == "../other/x.jpg"
    assert normalise_name("../imgs/e.jpg", root) == "e.jpg"
    with pytest.raises(ValueError, match="folder itself"):
        normalise_name(".", root)
    assert parse_pairs([f"g0.jpg {root / 'good1.jpg'}\n"], "p.txt", root) == [("g0.jpg", "good1.jpg")]
    with pytest.raises(InputError, match=r"^p\.txt:2: '\.' names the image folder itself"):
        parse_pairs(["a.jpg b.jpg\n", "a.jpg .\n"], "p.txt", root)
