"""Image decoding: JPEG/PNG/TIFF/BMP/WebP, grayscale/RGB/RGBA, 8 or 16 bit, EXIF orientation applied."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from ..errors import InputError
from .files import check_regular_file

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".pnm")
MIN_SIZE = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LARGE_FLOAT_BYTES = 256 << 20  # images whose float32 copy is larger are reduced in integers first
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # the last bytes of a complete file
_JPEG_REDUCTIONS = {8: (cv2.IMREAD_REDUCED_GRAYSCALE_8, cv2.IMREAD_REDUCED_COLOR_8),
                    4: (cv2.IMREAD_REDUCED_GRAYSCALE_4, cv2.IMREAD_REDUCED_COLOR_4),
                    2: (cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_COLOR_2)}


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` into an ``(H, W)`` or ``(H, W, 3)`` RGB array (uint8 or uint16), EXIF orientation applied.

    Raises :class:`InputError` with the path and the problem for a missing, empty, undecodable or too small file.
    """
    data = np.frombuffer(image_bytes(path), dtype=np.uint8)
    # ANYDEPTH keeps 16 bit, ANYCOLOR keeps grayscale as one channel; both still apply the EXIF orientation.
    image = _imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR, path)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    if image.dtype not in (np.uint8, np.uint16):
        image = _to_uint16(image)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise InputError(f"{path}: image is {w}x{h} px, smaller than the minimum {MIN_SIZE} px")
    return image


def image_bytes(path: str | os.PathLike) -> bytes:
    """The contents of image file ``path``, undecoded; :class:`InputError` naming it when it is missing, not a
    regular file, unreadable or empty (as :func:`read_image` reports them)."""
    path = check_regular_file(path, "image")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{path}: empty file")
    return data


def check_image(path: str | os.PathLike) -> None:
    """Raise what :func:`read_image` would raise for ``path``, from its header alone where that settles it.

    A file passes without being decoded when its header is readable, gives at least :data:`MIN_SIZE` px a side,
    names a format OpenCV decodes and, for JPEG and PNG, the file ends with the format's end marker (a cut-off
    copy does not); any other file is decoded by :func:`read_image`, whose error then names the problem (missing,
    empty, not an image, truncated, too small). Damage inside a complete-looking file is left to the decoding
    that follows.
    """
    if not _header_suffices(path):
        read_image(path)


def _header_suffices(path: str | os.PathLike) -> bool:
    try:
        with _open_header(path) as image:
            size, end = image.size, _END_MARKERS.get(str(image.format), b"")
        with open(path, "rb") as file:
            file.seek(-len(end), os.SEEK_END)
            complete = file.read() == end
        return complete and min(size) >= MIN_SIZE and cv2.haveImageReader(str(path))
    except Exception:  # noqa: BLE001 (any reason: let the decoder report it)
        return False


def _open_header(path: str | os.PathLike):
    """``PIL.Image.open(path)``: reads the header only, the pixels when asked."""
    from PIL import Image  # here: only header checks and bounded decoding need it

    check_regular_file(path, "image")  # a FIFO would block PIL's open
    Image.MAX_IMAGE_PIXELS = None  # PIL only reads headers here; OpenCV decodes the pixels, within our bounds
    return Image.open(path)


def header_size(path: str | os.PathLike) -> Optional[tuple[int, int, int, str]]:
    """``(W, H, channels, format)`` from the file's header, after EXIF orientation, without decoding the pixels;
    None when the header cannot be read (the full decoder then decides)."""
    try:
        with _open_header(path) as image:
            w, h = image.size
            channels = len(image.getbands())
            # PIL's getexif() decodes a whole PNG to look for an eXIf chunk after the pixels; OpenCV honours that
            # chunk wherever it is, so a PNG's is found from its chunk headers instead
            exif = _png_exif(path) if image.format == "PNG" else image.getexif()
            if exif.get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
                w, h = h, w
            return w, h, channels, str(image.format)
    except Exception:  # noqa: BLE001 (any reason: let the decoder report it)
        return None


def _png_exif(path: str | os.PathLike) -> "Image.Exif":
    """The EXIF of a PNG's ``eXIf`` chunk (empty without one), read by seeking over the chunks, not decoding."""
    from PIL import Image

    exif = Image.Exif()
    with open(path, "rb") as file:
        file.seek(len(PNG_SIGNATURE))
        while len(head := file.read(8)) == 8 and head[4:] != b"IEND":
            length = int.from_bytes(head[:4], "big")
            if head[4:] == b"eXIf":
                exif.load(b"Exif\x00\x00" + file.read(length))  # the prefix PIL's own PNG reader adds
                break
            file.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return exif


def read_image_bounded(path: str | os.PathLike, long_side: Optional[int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` for a network that sees it at ``long_side`` pixels, with memory bounded by that size.

    Images whose float32 copy is small (at most :data:`LARGE_FLOAT_BYTES`), or that are at most twice
    ``long_side``, are decoded exactly as :func:`read_image` does. Larger ones are reduced while still integers:
    JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the decoder itself, other formats are decoded then shrunk with
    area interpolation, in both cases to no less than twice ``long_side`` (the antialiased resize for the
    network does the rest). A 12000x9000 JPEG thus never exists in float32 at full size.

    Returns the ``(h, w[, 3])`` array and the original ``(W, H)`` (after EXIF orientation); keypoints found on
    the array map back with the scale ``w / W``, ``h / H``. Raises :class:`InputError` as :func:`read_image`,
    and for an image too large for memory, naming it.
    """
    header = header_size(path) if long_side is not None else None
    if header is None:
        image = read_image(path)
        return image, (image.shape[1], image.shape[0])
    w, h, channels, fmt = header
    if w * h * max(channels, 1) * 4 <= LARGE_FLOAT_BYTES or max(w, h) <= 2 * long_side:
        image = read_image(path)
        return image, (image.shape[1], image.shape[0])
    try:
        image = None
        if fmt == "JPEG":
            factor = next((f for f in _JPEG_REDUCTIONS if max(w, h) / f >= 2 * long_side), None)
            if factor is not None:
                image = _decode(path, _JPEG_REDUCTIONS[factor][channels >= 3])
        if image is None:
            image = read_image(path)
        scale = 2 * long_side / max(image.shape[:2])
        if scale < 1:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    except (MemoryError, cv2.error) as exc:
        raise InputError(f"{path}: image of {w}x{h} px too large to decode in the memory available "
                         f"({type(exc).__name__})") from None
    return image, (w, h)


def _decode(path: str | os.PathLike, flags: int) -> np.ndarray:
    """``cv2.imdecode`` of ``path`` with ``flags``, as RGB (or grayscale); :class:`InputError` if unreadable."""
    image = _imdecode(np.fromfile(str(path), dtype=np.uint8), flags, path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def _imdecode(data: np.ndarray, flags: int, path: str | os.PathLike) -> np.ndarray:
    """``cv2.imdecode``, or :class:`InputError` naming ``path``. A PNG's chunk checksums are checked first: libpng
    prints its own lines on stderr for a damaged PNG, which would break the one-line error."""
    if data[:8].tobytes() == PNG_SIGNATURE and not _png_chunks_intact(memoryview(data)):  # a view, not a copy
        image = None
    else:
        try:
            image = cv2.imdecode(data, flags)
        except cv2.error:
            image = None
    if image is None:
        raise InputError(f"{path}: not a readable image (unknown format, truncated or corrupt)")
    return image


def _png_chunks_intact(data: memoryview) -> bool:
    """Every chunk of a PNG (the file's bytes) is complete and matches its CRC, up to ``IEND``."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 8 + length
        if end + 4 > len(data):
            return False
        if zlib.crc32(data[pos + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            return False
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos = end + 4
    return False


def _to_uint16(image: np.ndarray) -> np.ndarray:
    """Float or wider-int images (e.g. 32-bit TIFF) scaled into uint16."""
    image = image.astype(np.float64)
    lo, hi = float(image.min()), float(image.max())
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return ((image - lo) * scale).astype(np.uint16)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` uint8/uint16 array -> ``(C, H, W)`` float32 tensor in [0, 1]."""
    import torch  # here, so that listing and pairing images does not load torch

    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    array = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    # divide in float64, then round once, as the reference preprocessing does
    return torch.from_numpy((array / scale).astype(np.float32))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read ``path`` as a ``(C, H, W)`` float32 tensor in [0, 1] (C is 1 or 3)."""
    return image_to_tensor(read_image(path))
