"""Rotation-robust matching: try the second image at 0/90/180/270 degrees and keep the best verified rotation.

Upright features (ALIKED, SuperPoint, DISK, LightGlue) tolerate only moderate in-plane rotation. When a pair is
rotated beyond that (a camera held sideways, an aerial view), :func:`match_with_rotation_search` extracts image 1
at each quarter turn (``torch.rot90``, counter-clockwise, as ``np.rot90``), matches it to image 0, verifies the
matches (:func:`~lightmatch.pipeline.verify.verify_pair`), keeps the rotation with the most inliers (ties: the
smaller turn) and maps that rotation's keypoints back into image 1's own pixels. Cost: image 1 is extracted, matched
and verified four times instead of once. ``aliked-n16rot`` is the rotation-tolerant extractor when one model for
all rotations is preferred.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..models.base import Extractor, Matcher
from ..types import Features, Matches
from .verify import VerifyOptions, verify_pair

QUARTER_TURNS = (0, 1, 2, 3)


def rotate_keypoints(kpts: np.ndarray, size: tuple[int, int], rot: int) -> np.ndarray:
    """Move ``(N, 2)`` pixel keypoints of a ``size = (W, H)`` image into ``np.rot90(image, rot)``.

    Quarter turns counter-clockwise: ``(x, y)`` goes to ``(y, W-1-x)`` (rot 1), ``(W-1-x, H-1-y)`` (2),
    ``(H-1-y, x)`` (3); the same convention as :func:`~lightmatch.eval.pose_data.rotate_intrinsics`.
    """
    k = np.asarray(kpts, dtype=np.float64).reshape(-1, 2)
    w, h = float(size[0]), float(size[1])
    x, y = k[:, 0], k[:, 1]
    rot = int(rot) % 4
    if rot == 1:
        return np.stack([y, w - 1 - x], -1)
    if rot == 2:
        return np.stack([w - 1 - x, h - 1 - y], -1)
    if rot == 3:
        return np.stack([h - 1 - y, x], -1)
    return k.copy()


@dataclass
class RotationSearchResult:
    """What :func:`match_with_rotation_search` returns.

    Attributes:
        features0, features1: features of both images, keypoints in each image's own pixels.
        matches: matches of the kept rotation. inliers: ``(N0,)`` bool, verified matches (aligned with matches0).
        turns: quarter turns (counter-clockwise) of image 1 that were kept. inliers_per_turn: verified inliers at
            each rotation tried. timings: seconds for extraction, matching and verification over all rotations.
    """

    features0: Features
    features1: Features
    matches: Matches
    inliers: np.ndarray
    turns: int
    inliers_per_turn: dict[int, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def match_with_rotation_search(image0: Optional[torch.Tensor], image1: torch.Tensor, extractor: Extractor,
                               matcher: Matcher, verify: Optional[VerifyOptions] = None,
                               features0: Optional[Features] = None) -> RotationSearchResult:
    """Match ``image0`` to ``image1`` turned by 0, 90, 180 and 270 degrees; keep the most verified inliers.

    Args:
        image0, image1: ``(C, H, W)`` float images in [0, 1]. features0: image 0's features when already extracted
            (then ``image0`` may be None).
        verify: how matches are verified (default: a fundamental matrix, MAGSAC++, 3 px, seed 0).
    """
    verify = verify or VerifyOptions("fundamental")
    timings = {"extract": 0.0, "match": 0.0, "verify": 0.0}
    t = time.perf_counter()
    feats0 = features0 if features0 is not None else extractor.extract(image0).to("cpu")
    timings["extract"] += time.perf_counter() - t
    best: Optional[tuple[int, Features, Matches, np.ndarray]] = None
    counts: dict[int, int] = {}
    for turns in QUARTER_TURNS:
        t = time.perf_counter()
        feats1 = extractor.extract(torch.rot90(image1, turns, dims=(1, 2))).to("cpu")
        t1 = time.perf_counter()
        matches = matcher.match(feats0, feats1)
        matches = Matches(matches.matches0.cpu(), matches.scores0.cpu(), matches.stop_layer, matches.info)
        t2 = time.perf_counter()
        inliers = verify_pair(feats0, feats1, matches, verify.model, threshold=verify.threshold,
                              confidence=verify.confidence, seed=verify.seed, max_iters=verify.max_iters,
                              estimator=verify.estimator)
        timings["extract"] += t1 - t
        timings["match"] += t2 - t1
        timings["verify"] += time.perf_counter() - t2
        counts[turns] = int(inliers.sum())
        if best is None or counts[turns] > counts[best[0]]:
            best = (turns, feats1, matches, inliers)
    turns, feats1, matches, inliers = best
    size = (int(image1.shape[-1]), int(image1.shape[-2]))  # (W, H) of image 1 as given
    rotated_size = (size[1], size[0]) if turns % 2 else size
    kpts = rotate_keypoints(feats1.keypoints.numpy(), rotated_size, (4 - turns) % 4)  # back into image 1
    feats1 = Features(torch.from_numpy(kpts.astype(np.float32)), feats1.scores, feats1.descriptors, size,
                      feats1.scales, None)  # orientations (SIFT) are not carried over
    return RotationSearchResult(feats0, feats1, matches, inliers, turns, counts, timings)
