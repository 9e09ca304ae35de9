"""Image lists and pairs: listing a directory, exhaustive and sequential pairing, hloc pairs files.

A pairs file (hloc's format) has one pair per line, ``name0 name1``, names relative to the image root with ``/``
separators. Blank lines and lines starting with ``#`` are skipped; fields after the first two are ignored, so
SuperGlue's evaluation files (``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)``) parse as pairs too. Names cannot
contain whitespace in this format.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, InputError, OutputError
from .atomic import atomic_output
from .files import check_regular_file
from .images import is_image_path

Pair = tuple[str, str]


def list_images(image_dir: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Sorted names of all images under ``image_dir`` (in its subfolders too unless not ``recursive``), relative to
    it with ``/`` separators: the one lister of image folders.

    Images are recognised by extension, case-insensitively (:func:`lightmatch.io.images.is_image_path`). Hidden
    files and folders (name starting with ``.``, e.g. macOS ``._x.jpg`` resource forks) are skipped. Symbolic links
    to folders are followed once (a link cycle is not walked twice). An empty folder gives an empty list.
    """
    root = Path(image_dir)
    if not root.exists():
        raise InputError(f"{root}: no such directory")
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    names: list[str] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink cycle or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if name.startswith(".") or not is_image_path(name):
                continue
            path = Path(folder, name)
            if path.is_file():
                names.append(path.relative_to(root).as_posix())
    return sorted(names)


def normalise_name(name: str, image_dir: str | os.PathLike) -> str:
    """``name`` as a clean path relative to ``image_dir`` with ``/`` separators (``./a//b.jpg`` -> ``a/b.jpg``).

    An absolute path becomes relative to ``image_dir``; an image outside it (another folder of a pairs file that
    spans folders) keeps a relative name climbing out with ``..`` (``/data/other/x.jpg`` with ``--image-dir
    /data/imgs`` is ``../other/x.jpg``): stores never hold absolute paths, and ``image_dir / name`` is the image.
    Raises :class:`ValueError` with the reason for a name of the folder itself, or one that no relative path
    reaches (another drive).
    """
    root = os.path.normpath(os.path.abspath(image_dir))
    path = os.path.normpath(os.path.join(root, name))  # an absolute name replaces the root
    if path == root:
        raise ValueError(f"{name!r} names the image folder itself, not an image")
    try:
        relative = os.path.relpath(path, root)
    except ValueError:  # Windows: another drive
        raise ValueError(f"{name} has no path relative to the image folder {image_dir}") from None
    return relative.replace(os.sep, "/")


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def exhaustive_pairs(names: Sequence[str]) -> list[Pair]:
    """Every unordered pair of distinct names, ``(names[i], names[j])`` for ``i < j``, in order.

    Repeated names are dropped (first occurrence kept).
    """
    names = _unique(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential_pairs(names: Sequence[str], window: int = 5, loop: bool = False) -> list[Pair]:
    """Each image paired with the next ``window`` images in the given order (hloc's ``pairs_from_sequential``).

    With ``loop=True`` the sequence is treated as closed (e.g. a turntable or a walk around an object): the last
    images are also paired with the first ones, as if ``names`` wrapped around, so image ``i`` is paired with
    ``(i + k) % N`` for ``k = 1..window``. Each unordered pair appears once; repeated names are dropped.
    """
    if window < 1:
        raise ConfigError(f"sequential pairing needs a window of at least 1, got {window}")
    names = _unique(names)
    n = len(names)
    pairs: list[Pair] = []
    seen: set[frozenset[int]] = set()
    for i in range(n):
        for k in range(1, min(window, n - 1) + 1):  # a wider window only repeats pairs: O(n * min(window, n))
            j = i + k
            if j >= n:
                if not loop:
                    break
                j %= n
            key = frozenset((i, j))
            if i == j or key in seen:
                continue
            seen.add(key)
            pairs.append((names[i], names[j]))
    return pairs


def format_pairs(pairs: Iterable[Pair]) -> str:
    """Pairs as the text of an hloc pairs file, one ``name0 name1`` line per pair."""
    lines = []
    for name0, name1 in pairs:
        for name in (name0, name1):
            if not name or any(c.isspace() for c in name):
                raise InputError(f"image name {name!r} is empty or contains whitespace, which a pairs file "
                                 "cannot represent; rename the file")
        lines.append(f"{name0} {name1}\n")
    return "".join(lines)


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> None:
    """Write ``pairs`` to ``path`` as an hloc pairs file (replacing it atomically)."""
    text = format_pairs(pairs)
    try:
        with atomic_output(path, "the pairs file") as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write pairs file ({exc.strerror or exc})") from exc


def parse_pairs(lines: Iterable[str], source: str, image_dir: str | os.PathLike | None = None) -> list[Pair]:
    """Parse the lines of an hloc pairs file; ``source`` names the file in error messages.

    Blank lines and ``#`` comments are skipped, extra fields after the two names are ignored, and pairs are kept
    as written (order and duplicates included). With ``image_dir``, names are normalised to paths relative to it
    (:func:`normalise_name`). A line with a single field, or a name outside ``image_dir``, raises
    :class:`InputError` naming ``source`` and the line number.
    """
    pairs: list[Pair] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) < 2:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InputError(f"{source}:{number}: expected two image names 'name0 name1', got {shown!r}")
        pair = (fields[0], fields[1])
        if image_dir is not None:
            try:
                pair = (normalise_name(pair[0], image_dir), normalise_name(pair[1], image_dir))
            except ValueError as exc:
                raise InputError(f"{source}:{number}: {exc}") from None
        pairs.append(pair)
    return pairs


def read_pairs(path_or_dash: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[Pair]:
    """Read an hloc pairs file; ``'-'`` reads standard input (named ``<stdin>`` in errors). With ``image_dir``,
    names are normalised relative to it and names outside it are refused (:func:`parse_pairs`)."""
    if str(path_or_dash) == "-":
        try:
            return parse_pairs(sys.stdin, "<stdin>", image_dir)
        except UnicodeDecodeError as exc:
            raise InputError(f"<stdin>: not a text pairs list ({exc.reason})") from exc
    path = check_regular_file(path_or_dash, "pairs file")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return parse_pairs(handle, str(path), image_dir)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text pairs file ({exc.reason})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
