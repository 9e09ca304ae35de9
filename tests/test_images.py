"""Image decoding: formats, channel layouts, bit depths, EXIF orientation, bad files."""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import LIGHTMATCH
from PIL import Image

from lightmatch.errors import InputError
from lightmatch.io import h5
from lightmatch.io.images import check_image, header_size, image_to_tensor, load_image, read_image


@pytest.fixture(scope="module")
def photo(sample_pair) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(sample_pair[0])), cv2.COLOR_BGR2RGB)[:96, :128]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp", ".webp"])
def test_formats_decode_to_rgb(tmp_path, photo, ext):
    path = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    image = read_image(path)
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    lossless = ext in (".png", ".tif", ".bmp")
    assert np.abs(image.astype(int) - photo).max() <= (0 if lossless else 40)


def test_grayscale_rgba_and_16_bit(tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (96, 128)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGRA))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), photo)  # alpha dropped, RGB order
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    g16 = read_image(tmp_path / "g16.png")
    assert g16.dtype == np.uint16
    tensor = image_to_tensor(g16)
    assert tensor.shape == (1, 96, 128) and abs(float(tensor.max()) - gray.max() / 255) < 1e-6


def test_exif_orientation_is_applied(tmp_path, photo):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (128, 96, 3)  # displayed upright: width and height swapped
    expected = np.rot90(photo, k=-1)
    assert np.abs(image.astype(int) - expected).mean() < 8


@pytest.mark.parametrize("late", [False, True])
def test_png_exif_orientation_from_the_header(tmp_path, photo, monkeypatch, late):
    """A PNG's eXIf chunk turns it, before the pixels (as PIL writes it) or after them: header_size agrees with
    the decoder, from the chunk headers, never decoding the pixels (PIL's getexif() would, for a PNG)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    Image.fromarray(photo).save(path, exif=exif)
    if late:  # move the eXIf chunk behind the image data
        data, pos, chunks = path.read_bytes(), 8, []
        while pos < len(data):
            end = pos + 12 + int.from_bytes(data[pos:pos + 4], "big")
            chunks.append(data[pos:end])
            pos = end
        exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
        rest = [c for c in chunks if c is not exif_chunk]
        path.write_bytes(data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1])
    assert read_image(path).shape == (128, 96, 3)

    def no_decoding(self):
        raise AssertionError("header_size decoded the pixels")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    assert header_size(path) == (96, 128, 3, "PNG")


def test_load_image_is_float_in_unit_range(sample_pair):
    image = load_image(sample_pair[0])
    assert image.shape == (3, 512, 512) and image.dtype.is_floating_point
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_image(tmp_path / "zero.png")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "junk.jpg")


def test_check_image_reads_headers_and_fails_as_decoding_does(tmp_path, photo, monkeypatch):
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    bad = {"missing.png": None, "text.png": b"not an image", "empty.jpg": b""}
    for ext in (".jpg", ".png"):  # cut-off copies: the header alone looks fine
        data = cv2.imencode(ext, bgr)[1].tobytes()
        bad[f"cut{ext}"] = data[:len(data) // 2]
    bad["tiny.png"] = cv2.imencode(".png", bgr[:20])[1].tobytes()
    for name, data in bad.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as decoded:
            read_image(tmp_path / name)
        with pytest.raises(InputError, match=re.escape(str(decoded.value))):
            check_image(tmp_path / name)
    for ext in (".jpg", ".png", ".tif", ".webp"):
        cv2.imwrite(str(tmp_path / f"good{ext}"), bgr)
    monkeypatch.setattr(cv2, "imdecode", None)  # good images pass without being decoded
    for ext in (".jpg", ".png", ".tif", ".webp"):
        check_image(tmp_path / f"good{ext}")


# ---- D1: huge images are decoded within memory bounded by the network size ----

PEAK_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _peak_rss_mb(*args) -> float:
    """Peak resident memory (MB) of the command ``args``, measured by a parent that runs nothing else."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout) / 1024


@pytest.fixture(scope="module")
def huge_and_small(tmp_path_factory, sample_pair):
    """The same scene at 1500x1125 (decoded exactly) and 12000x9000 (a 108 MP JPEG, reduced while decoding)."""
    root = tmp_path_factory.mktemp("huge")
    photo = cv2.imread(str(sample_pair[0]))
    small = cv2.resize(np.tile(photo, (3, 3, 1))[:1125, :1500], (1500, 1125))
    (root / "small").mkdir()
    (root / "huge").mkdir()
    cv2.imwrite(str(root / "small" / "x.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
    huge = cv2.resize(small, (12000, 9000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(root / "huge" / "x.jpg"), huge, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del huge
    return root


def test_huge_jpeg_decodes_within_bounded_memory(huge_and_small, tmp_path):
    """`extract --resize 1024` on a 12000x9000 JPEG peaks at most 1 GB above the same command on a normal image
    (before the fix: about 18 GB), and its features live in the original image's pixels."""
    model = ["--features", "sift", "--resize", "1024", "--max-keypoints", "1024", "-q"]
    normal = _peak_rss_mb(LIGHTMATCH, "extract", huge_and_small / "small", "-o", tmp_path / "small", *model)
    huge = _peak_rss_mb(LIGHTMATCH, "extract", huge_and_small / "huge", "-o", tmp_path / "huge", *model)
    assert huge - normal < 1024, f"peak RSS {huge:.0f} MB for the huge image vs {normal:.0f} MB"
    big = h5.read_features(tmp_path / "huge" / "features.h5", "x.jpg")
    small = h5.read_features(tmp_path / "small" / "features.h5", "x.jpg")
    assert big.image_size == (12000, 9000) and len(big) > 500
    k_big, k_small = big.keypoints.numpy(), (small.keypoints.numpy() + 0.5) * 8 - 0.5
    assert (k_big >= -0.5).all() and (k_big[:, 0] < 12000).all() and (k_big[:, 1] < 9000).all()
    nearest = np.linalg.norm(k_big[:, None] - k_small[None], axis=-1).min(1)
    assert np.mean(nearest < 8) > 0.6  # the same keypoints as the normal image, within a network pixel


def test_bounded_decoding_keeps_small_images_exact(sample_pair):
    from lightmatch.io.images import read_image_bounded

    image, size = read_image_bounded(sample_pair[0], 64)  # small float copy: the exact path whatever the target
    np.testing.assert_array_equal(image, read_image(sample_pair[0]))
    assert size == (512, 512)
