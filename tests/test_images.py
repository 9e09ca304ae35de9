"""Image decoding: formats, channel layouts, bit depths, EXIF orientation, bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from lightmatch.errors import InputError
from lightmatch.io.images import image_to_tensor, load_image, read_image


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
