"""Create the bundled sample pair in assets/ from a public-domain photo shipped by scikit-image.

The photo is NASA's astronaut portrait (public domain; ``skimage.data.astronaut``). Image 1 is image 0 warped by a
fixed homography (rotation, scale, perspective) with a brightness/contrast change; the homography (image 0 -> image 1,
pixel centres at integer coordinates) is saved beside it so `lightmatch match --homography` can count correct matches.

    python scripts/make_sample.py            # writes assets/sample0.jpg, assets/sample1.jpg, assets/sample_H.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def sample_homography(width: int, height: int) -> np.ndarray:
    """Rotation by 15 degrees and scale 0.85 about the centre, plus a mild perspective tilt."""
    cx, cy = width / 2, height / 2
    angle, scale = np.deg2rad(15.0), 0.85
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    rotate = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 0],
                       [scale * np.sin(angle), scale * np.cos(angle), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [2e-4, 1e-4, 1]])
    back = np.array([[1, 0, cx + 10], [0, 1, cy - 6], [0, 0, 1]])
    H = back @ tilt @ rotate @ to_centre
    return H / H[2, 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    args = parser.parse_args()
    from skimage import data

    image0 = data.astronaut()  # (512, 512, 3) RGB uint8
    h, w = image0.shape[:2]
    H = sample_homography(w, h)
    image1 = cv2.warpPerspective(image0, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    image1 = np.clip(image1.astype(np.float32) * 0.9 + 12, 0, 255).astype(np.uint8)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "sample0.jpg"), cv2.cvtColor(image0, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(args.out / "sample1.jpg"), cv2.cvtColor(image1, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    np.savetxt(args.out / "sample_H.txt", H, fmt="%.10f")
    (args.out / "README.md").write_text(
        "# Sample pair\n\n`sample0.jpg`: NASA astronaut portrait (public domain), as shipped by scikit-image "
        "(`skimage.data.astronaut`).\n`sample1.jpg`: the same photo warped by the homography in `sample_H.txt` "
        "(image 0 -> image 1, pixel centres at integer coordinates) with a brightness/contrast change.\n\n"
        "Made by `python scripts/make_sample.py`.\n")


if __name__ == "__main__":
    main()
