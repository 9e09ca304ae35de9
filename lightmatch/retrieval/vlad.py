"""VLAD global descriptors aggregated from an image's local descriptors, with a k-means codebook.

For an image with local descriptors x_i (D,) and a codebook of k centroids c_j (k-means on a sample of the
collection's descriptors), VLAD sums the residuals x_i - c_j of the descriptors assigned to each centroid: a (k, D)
matrix. Then the usual normalisations: each row to unit length (intra-normalisation), a signed square root (power
normalisation) and the whole vector to unit length, so that the inner product of two vectors is their similarity.

A codebook is saved as ``.npz`` holding only numeric and string arrays (read with ``allow_pickle=False``): the
centroids, the extractor that made the descriptors, and the format version.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError, InputError, OutputError
from ..io.atomic import atomic_output

CODEBOOK_SIZE = 32  # centroids (measured: docs/reconstruction.md; 16 to 128 within a few points, 32 best)
CODEBOOK_SAMPLE = 100_000  # local descriptors k-means runs on at most
CODEBOOK_FORMAT = 1


@dataclass
class Codebook:
    """k-means centroids (k, D) float32 of the local descriptors of ``extractor``."""

    centroids: np.ndarray
    extractor: str

    @property
    def digest(self) -> str:
        """A short content hash: global descriptors record the codebook they were made with."""
        return hashlib.sha256(np.ascontiguousarray(self.centroids, np.float32).tobytes()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """Length of the VLAD vectors this codebook makes."""
        return int(self.centroids.size)

    def save(self, path: str | os.PathLike) -> None:
        """Write the codebook as ``.npz`` (no pickled objects), replacing ``path`` atomically."""
        try:
            with atomic_output(path, "the codebook") as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, centroids=self.centroids.astype(np.float32),
                             extractor=np.array(self.extractor), format=np.array(CODEBOOK_FORMAT))
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the codebook ({exc.strerror or exc})") from exc

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Codebook":
        """Read a codebook written by :meth:`save`; a one-line :class:`InputError` for anything else."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such codebook file")
        try:
            with np.load(path, allow_pickle=False) as data:
                centroids = np.asarray(data["centroids"], np.float32)
                extractor = str(data["extractor"])
                version = int(data["format"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a lightmatch codebook ({exc})") from None
        if version != CODEBOOK_FORMAT or centroids.ndim != 2 or not np.isfinite(centroids).all():
            raise InputError(f"{path}: not a lightmatch codebook (format {version}, centroids {centroids.shape})")
        return cls(centroids, extractor)

    def check(self, extractor: str, dim: int, source: str) -> None:
        """Refuse descriptors of another extractor or dimension than the codebook's."""
        if self.extractor != extractor or self.centroids.shape[1] != dim:
            raise ConfigError(f"{source}: codebook made for {self.extractor} descriptors of dimension "
                              f"{self.centroids.shape[1]}, these are {extractor} of dimension {dim}; train a new "
                              "one (another --codebook file)")


def sample_descriptors(descriptors: Iterable[np.ndarray], budget: int = CODEBOOK_SAMPLE,
                       seed: int = 0) -> np.ndarray:
    """Up to ``budget`` rows from per-image (N_i, D) descriptor arrays, spread evenly over the images."""
    arrays = [np.asarray(d, np.float32) for d in descriptors if len(d)]
    if not arrays:
        return np.zeros((0, 0), np.float32)
    per_image = max(1, budget // len(arrays))
    rng = np.random.default_rng(seed)
    picked = [d if len(d) <= per_image else d[rng.choice(len(d), per_image, replace=False)] for d in arrays]
    return np.concatenate(picked)


def train_codebook(sample: np.ndarray, extractor: str, size: int = CODEBOOK_SIZE, seed: int = 0,
                   iterations: int = 20) -> Codebook:
    """k-means (k-means++ seeding, ``iterations`` Lloyd steps) of ``sample`` (N, D) into ``size`` centroids."""
    import cv2

    if len(sample) < size:
        raise InputError(f"too few local descriptors ({len(sample)}) to learn a codebook of {size} words; add "
                         "images or give --codebook FILE")
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, iterations, 1e-4)
    _, _, centroids = cv2.kmeans(np.ascontiguousarray(sample, np.float32), size, None, criteria, 1,
                                 cv2.KMEANS_PP_CENTERS)
    return Codebook(centroids.astype(np.float32), extractor)


def vlad(descriptors: np.ndarray, codebook: Codebook) -> np.ndarray:
    """The normalised VLAD vector (k·D,) float32 of one image's (N, D) local descriptors (zeros when N = 0)."""
    c = codebook.centroids
    x = np.asarray(descriptors, np.float32).reshape(-1, c.shape[1])
    out = np.zeros_like(c)
    if len(x):
        distances = (c * c).sum(1)[None] - 2 * x @ c.T  # |x - c|^2 up to the constant |x|^2
        nearest = distances.argmin(1)
        np.add.at(out, nearest, x - c[nearest])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)  # intra-normalisation
        out = np.sign(out) * np.sqrt(np.abs(out))  # power normalisation
        total = np.linalg.norm(out)
        if total > 0:
            out /= total
    return out.reshape(-1)
