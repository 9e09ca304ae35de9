"""Training data: image pairs warped by random homographies from any image folder, glue-factory's photometric
augmentation, and the ground-truth assignment of keypoints under the homography.

Every sample is a pure function of ``(seed, split, index)``: its source image and all its random numbers come from
a generator seeded with those, so a run resumed at step ``s`` sees exactly the samples an uninterrupted run sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..eval.homography_data import synthetic_homography
from ..geometry import warp_points
from ..io.images import read_image

IGNORE, UNMATCHED = -2, -1


@dataclass(frozen=True)
class HomographyConfig:
    """glue-factory's ``sample_homography_corners`` settings of superpoint+lightglue_homography.yaml."""

    difficulty: float = 0.7
    max_angle: float = 45.0
    translation: float = 1.0
    n_angles: int = 10
    min_convexity: float = 0.05
    patch_size: tuple[int, int] = (640, 480)  # (W, H)
    photometric_p: float = 0.95  # probability of applying the "lg" augmentation to a view


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split`` (``train`` or ``val``)."""
    return np.random.default_rng([seed, 0 if split == "train" else 1, index])


# ------------------------------------------------------------------------------------------------ augmentation
def _gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    table = (255.0 * (np.arange(256) / 255.0) ** gamma).clip(0, 255).astype(np.uint8)
    return cv2.LUT(img, table)


def _hsv_shift(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    hue, sat, val = rng.uniform(-20, 20), rng.uniform(-30, 30), rng.uniform(-100, -40)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue / 2.0) % 180.0  # OpenCV hue is in [0, 180)
    hsv[..., 1:] += (sat, val)
    return cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)


def _blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    k = int(rng.choice([3, 5, 7, 9]))
    return cv2.blur(img, (k, k))


def _motion_blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    k = int(rng.choice(np.arange(3, 26, 2)))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 360)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))


def _iso_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    color, intensity = rng.uniform(0.01, 0.05), rng.uniform(0.1, 0.5)
    hls = cv2.cvtColor(img, cv2.COLOR_RGB2HLS).astype(np.float32)
    lum = hls[..., 1] / 255.0
    hls[..., 0] += rng.normal(0, color * 360, lum.shape) / 2.0
    hls[..., 1] += 255.0 * rng.poisson(lum * intensity * 255.0) / 255.0
    hls[..., 0] %= 180.0
    return cv2.cvtColor(hls.clip(0, 255).astype(np.uint8), cv2.COLOR_HLS2RGB)


def _jpeg(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 100))])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else img


def _brightness_contrast(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    alpha, beta = 1.0 + rng.uniform(-0.3, 0.0), rng.uniform(-0.4, 0.0)
    return (img.astype(np.float32) * alpha + beta * 255.0).clip(0, 255).astype(np.uint8)


def _clahe(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(1.0, 4.0)), tileGridSize=(8, 8))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def lg_augment(rng: np.random.Generator, img: np.ndarray, p: float = 0.95) -> np.ndarray:
    """glue-factory's "lg" photometric augmentation of an ``(H, W, 3)`` uint8 RGB image, applied with probability
    ``p``: gamma in [0.15, 0.65] (p 0.1), HSV shift with value -100..-40 (p 0.1), one of blur / motion blur / ISO noise
    / JPEG (p 0.1), blur (p 0.1), motion blur (p 0.1), brightness -0.4..0 and contrast -0.3..0 (p 0.5), CLAHE (p 0.2).
    """
    if rng.uniform() >= p:
        return img
    if rng.uniform() < 0.1:
        img = _gamma(img, rng.uniform(0.15, 0.65))
    if rng.uniform() < 0.1:
        img = _hsv_shift(rng, img)
    if rng.uniform() < 0.1:
        img = (_blur, _motion_blur, _iso_noise, _jpeg)[int(rng.integers(4))](rng, img)
    if rng.uniform() < 0.1:
        img = _blur(rng, img)
    if rng.uniform() < 0.1:
        img = _motion_blur(rng, img)
    if rng.uniform() < 0.5:
        img = _brightness_contrast(rng, img)
    if rng.uniform() < 0.2:
        img = _clahe(rng, img)
    return img


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


@dataclass
class PairSample:
    """Two warped, augmented views of one image: ``(H, W, 3)`` uint8 each, and ``H_0to1`` ``(3, 3)`` float64 mapping
    pixels of view 0 to view 1 (pixel centres at integers)."""

    image0: np.ndarray
    image1: np.ndarray
    H_0to1: np.ndarray
    source: str = ""


def make_pair(image: np.ndarray, rng: np.random.Generator, conf: HomographyConfig) -> PairSample:
    """Two views of ``image``: each a homography onto a ``conf.patch_size`` patch drawn inside the image (so the
    warped views have no empty border), then the "lg" augmentation; ``H_0to1 = H1 @ H0^-1``."""
    image = _to_rgb8(image)
    h, w = image.shape[:2]
    views, homs = [], []
    for _ in range(2):
        H = synthetic_homography(rng, w, h, conf.patch_size, difficulty=conf.difficulty,
                                 translation=conf.translation, max_angle=conf.max_angle, n_angles=conf.n_angles,
                                 min_convexity=conf.min_convexity)
        view = cv2.warpPerspective(image, H, tuple(conf.patch_size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
        views.append(lg_augment(rng, view, conf.photometric_p))
        homs.append(H)
    H_0to1 = homs[1] @ np.linalg.inv(homs[0])
    return PairSample(views[0], views[1], H_0to1 / H_0to1[2, 2])


@dataclass
class PairSource:
    """The deterministic stream of pairs of one split: sample ``k`` uses image ``order(epoch)[k % n]`` where
    ``epoch = k // n`` and ``order`` is a seeded permutation per epoch (training) or the identity (validation)."""

    images: list[Path]
    split: str
    seed: int
    conf: HomographyConfig = field(default_factory=HomographyConfig)

    def image_of(self, index: int) -> Path:
        n = len(self.images)
        if self.split != "train":
            return self.images[index % n]
        order = np.random.default_rng([self.seed, 2, index // n]).permutation(n)
        return self.images[int(order[index % n])]

    def __getitem__(self, index: int) -> PairSample:
        path = self.image_of(index)
        sample = make_pair(read_image(path), sample_rng(self.seed, self.split, index), self.conf)
        sample.source = str(path)
        return sample

    def fingerprint(self) -> str:
        """Identifies the stream (images, seed, settings), for the feature cache."""
        text = repr((self.split, self.seed, asdict(self.conf), [str(p) for p in self.images]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ ground truth
@torch.no_grad()
def ground_truth(kpts0: torch.Tensor, kpts1: torch.Tensor, H_0to1: torch.Tensor, mask0: torch.Tensor,
                 mask1: torch.Tensor, th_positive: float = 3.0,
                 th_negative: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground-truth assignment under a homography (glue-factory's ``gt_matches_from_homography``).

    The distance of ``(i, j)`` is the larger of the two squared reprojection errors (0 -> 1 and 1 -> 0). A pair is
    positive when it is a mutual argmin with distance below ``th_positive``^2; a point is unmatchable (-1) when its
    nearest one-sided distance exceeds ``th_negative``^2 (this includes points that fall outside the other image);
    every other point is ignored (-2). Padded points (``mask`` False) are ignored and never positive.

    Args:
        kpts0: ``(B, M, 2)``, kpts1: ``(B, N, 2)`` pixels; H_0to1: ``(B, 3, 3)``; mask0 ``(B, M)``, mask1 ``(B, N)``.

    Returns:
        assignment ``(B, M, N)`` bool, matches0 ``(B, M)`` and matches1 ``(B, N)`` int64 (index, -1 or -2).
    """
    H = H_0to1.double()
    k0, k1 = kpts0.double(), kpts1.double()
    p01 = warp_points(k0, H)
    p10 = warp_points(k1, torch.linalg.inv(H))
    valid = mask0[:, :, None] & mask1[:, None, :]
    inf = k0.new_tensor(float("inf"))
    dist0 = torch.where(valid, ((p01[:, :, None] - k1[:, None]) ** 2).sum(-1), inf)
    dist1 = torch.where(valid, ((k0[:, :, None] - p10[:, None]) ** 2).sum(-1), inf)
    dist = torch.maximum(dist0, dist1)
    min0, min1 = dist.min(2).indices, dist.min(1).indices
    mutual = torch.zeros_like(valid)
    mutual.scatter_(2, min0[:, :, None], True)
    mutual &= torch.zeros_like(valid).scatter_(1, min1[:, None, :], True)
    positive = mutual & (dist < th_positive ** 2) & valid
    negative0 = (dist0.min(2).values > th_negative ** 2) & mask0
    negative1 = (dist1.min(1).values > th_negative ** 2) & mask1
    m0 = torch.where(positive.any(2), min0, IGNORE)
    m1 = torch.where(positive.any(1), min1, IGNORE)
    m0 = torch.where(negative0, UNMATCHED, m0)
    m1 = torch.where(negative1, UNMATCHED, m1)
    return positive, m0, m1
