"""Rotation-robust matching: features at 0/90/180/270 degrees, matched at the quarter turn with most inliers.

Upright features (ALIKED, SuperPoint, DISK, LightGlue) tolerate only moderate in-plane rotation. When a pair is
rotated beyond that (a camera held sideways, an aerial view, a hand-held indoor sequence), the two wrappers here
search the four quarter turns:

* :class:`RotationSearchExtractor` extracts an image at each quarter turn (``torch.rot90``, counter-clockwise, as
  ``np.rot90``) and returns one feature set: every keypoint in the upright image's pixels, its turn ``k`` recorded
  as the orientation ``k * pi / 2`` (``Features.oris``, stored in hloc's ``oris`` dataset).
* :class:`RotationSearchMatcher` matches image 0's upright keypoints to each turn of image 1 (keypoints moved into
  that turn's frame, as the network saw them), verifies each with a robust model
  (:meth:`~lightmatch.pipeline.verify.VerifyOptions.inliers`), and keeps the turn with the most inliers (ties: the
  smaller turn). ``Matches.info`` reports ``turns`` and ``inliers_per_turn``.

Since each image is extracted once (at four turns) and the features are an ordinary feature set, everything that
takes an extractor and a matcher works unchanged: two images, batches with their stores and resume, Ray, and
``eval``. Cost: 4x the extraction of every image, 4x the matching and verification of every pair, 4x the stored
keypoints. ``aliked-n16rot`` is the rotation-tolerant extractor when one model for all rotations is preferred.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..models.base import Extractor, Matcher
from ..types import Features, Matches
from .verify import VerifyOptions

QUARTER_TURNS = (0, 1, 2, 3)
QUARTER_TURN_RAD = math.pi / 2


def rotate_keypoints(kpts: np.ndarray | torch.Tensor, size: tuple[int, int], rot: int) -> np.ndarray | torch.Tensor:
    """Move ``(N, 2)`` pixel keypoints of a ``size = (W, H)`` image into ``np.rot90(image, rot)`` (NumPy in, float64
    NumPy out; a tensor in, a tensor of its dtype out).

    Quarter turns counter-clockwise: ``(x, y)`` goes to ``(y, W-1-x)`` (rot 1), ``(W-1-x, H-1-y)`` (2),
    ``(H-1-y, x)`` (3); the same convention as :func:`~lightmatch.eval.pose_data.rotate_intrinsics`.
    """
    is_tensor = isinstance(kpts, torch.Tensor)
    k = kpts.reshape(-1, 2) if is_tensor else np.asarray(kpts, dtype=np.float64).reshape(-1, 2)
    stack = torch.stack if is_tensor else np.stack
    w, h = float(size[0]), float(size[1])
    x, y = k[:, 0], k[:, 1]
    rot = int(rot) % 4
    if rot == 1:
        return stack([y, w - 1 - x], -1)
    if rot == 2:
        return stack([w - 1 - x, h - 1 - y], -1)
    if rot == 3:
        return stack([h - 1 - y, x], -1)
    return k.clone() if is_tensor else k.copy()


def keypoint_turns(feats: Features) -> torch.Tensor:
    """``(N,)`` quarter turn (0-3) at which each keypoint of a :class:`RotationSearchExtractor` feature set was
    found, read from its orientations; all 0 for features without orientations."""
    if feats.oris is None:
        return torch.zeros(len(feats), dtype=torch.long)
    return torch.round(feats.oris.detach().cpu().double() / QUARTER_TURN_RAD).long() % 4


def _select(feats: Features, index: torch.Tensor, turns: int) -> Features:
    """The keypoints ``index`` of ``feats``, moved into the frame of the image turned by ``turns``."""
    w, h = feats.image_size
    pick = index.to(feats.keypoints.device)
    kpts = rotate_keypoints(feats.keypoints[pick], (w, h), turns)
    size = (h, w) if turns % 2 else (w, h)
    scales = feats.scales[pick] if feats.scales is not None else None
    return Features(kpts.contiguous(), feats.scores[pick], feats.descriptors[pick], size, scales, None)


def chosen_turn(feats0: Features, feats1: Features, matches: Matches) -> tuple[Features, Features, Matches]:
    """The keypoints a rotation search compared for a pair: image 0's upright ones and image 1's at the turn it
    kept (both in the upright images' pixels), and ``matches`` indexing them. Keypoint counts, matching score and
    recall count these, not the four turns. A pair matched without a search (no ``turns`` in ``matches.info``)
    comes back unchanged."""
    turns = matches.info.get("turns")
    if turns is None:
        return feats0, feats1, matches
    index0 = torch.nonzero(keypoint_turns(feats0) == 0)[:, 0]
    index1 = torch.nonzero(keypoint_turns(feats1) == turns)[:, 0]
    position = torch.full((len(feats1),), -1, dtype=torch.long)
    position[index1] = torch.arange(len(index1))
    m0 = matches.matches0.cpu()[index0]
    m0 = torch.where(m0 > -1, position[m0.clamp(min=0)], m0)
    return (_select(feats0, index0, 0), _select(feats1, index1, 0),
            Matches(m0, matches.scores0.cpu()[index0], matches.stop_layer, matches.info))


def chosen_degrees(matches: Matches) -> Optional[int]:
    """Image 1's turn kept by a rotation search, in degrees counter-clockwise; None without a search."""
    turns = matches.info.get("turns")
    return None if turns is None else 90 * int(turns)


class RotationSearchExtractor(Extractor):
    """``base``'s features at the four quarter turns of the image, as one set (see the module docstring). Its
    settings, precision and keypoint budget are the base extractor's."""

    def __init__(self, base: Extractor) -> None:
        nn.Module.__init__(self)
        if base.name.startswith("sift"):
            raise ConfigError("--rotation-search: SIFT is rotation invariant and keeps its own orientations; "
                              "the search is for upright extractors (aliked, disk, superpoint, xfeat)")
        self.base = base

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.base.name}+rotation-search"

    @property
    def grayscale(self) -> bool:  # type: ignore[override]
        return self.base.grayscale

    @property
    def descriptor_dim(self) -> int:  # type: ignore[override]
        return self.base.descriptor_dim

    @property
    def resize(self) -> Optional[int]:  # type: ignore[override]
        return self.base.resize

    @property
    def precision(self) -> str:  # type: ignore[override]
        return self.base.precision

    @property
    def compute_dtype(self) -> Optional[torch.dtype]:
        return self.base.compute_dtype

    def settings(self) -> dict[str, Any]:
        return self.base.settings()

    @property
    def upsample(self) -> bool:  # type: ignore[override]
        return self.base.upsample

    def budget_settings(self, n: int) -> tuple[dict[str, Any], bool]:
        return self.base.budget_settings(n)

    def with_settings(self, **overrides: Any) -> "RotationSearchExtractor":
        return RotationSearchExtractor(self.base.with_settings(**overrides))

    def with_keypoint_budget(self, n: int) -> tuple["RotationSearchExtractor", bool]:
        base, exact = self.base.with_keypoint_budget(n)
        return RotationSearchExtractor(base), exact

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        return self.base.preprocess(image)

    @torch.inference_mode()
    def run(self, image: torch.Tensor, scale: tuple[float, float], image_size: tuple[int, int]) -> Features:
        """``base.run`` on the prepared image at each quarter turn; keypoints back in the upright image's pixels,
        ``oris`` the turn (``k * pi / 2``)."""
        w, h = int(image_size[0]), int(image_size[1])
        parts = []
        for turns in QUARTER_TURNS:
            size = (h, w) if turns % 2 else (w, h)
            feats = self.base.run(torch.rot90(image, turns, dims=(-2, -1)), scale[::-1] if turns % 2 else scale,
                                  size)
            kpts = rotate_keypoints(feats.keypoints, size, (4 - turns) % 4)
            parts.append((feats, kpts))
        scales = (torch.cat([f.scales for f, _ in parts]) if all(f.scales is not None for f, _ in parts)
                  else None)
        oris = torch.cat([torch.full((len(f),), t * QUARTER_TURN_RAD, dtype=torch.float32, device=k.device)
                          for t, (f, k) in zip(QUARTER_TURNS, parts)])
        return Features(torch.cat([k for _, k in parts]).float().contiguous(),
                        torch.cat([f.scores for f, _ in parts]), torch.cat([f.descriptors for f, _ in parts]),
                        (w, h), scales, oris)


class RotationSearchMatcher(Matcher):
    """Matches image 0's upright keypoints to each quarter turn of image 1's (features of a
    :class:`RotationSearchExtractor`) and keeps the turn with the most verified inliers. Its settings, precision
    and depth are the base matcher's.

    ``verify``: how each turn is verified (default: a fundamental matrix, MAGSAC++, 3 px, seed 0).
    """

    def __init__(self, base: Matcher, verify: Optional[VerifyOptions] = None) -> None:
        nn.Module.__init__(self)
        self.base = base
        self.verify = verify or VerifyOptions("fundamental")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.base.name}+rotation-search"

    @property
    def weights_id(self) -> Optional[str]:  # type: ignore[override]
        return self.base.weights_id

    @property
    def num_layers(self) -> Optional[int]:
        return self.base.num_layers

    def matching_settings(self) -> dict[str, Any]:
        return self.base.matching_settings()

    def settings(self) -> dict[str, Any]:
        return self.base.settings()

    def with_settings(self, **overrides: Any) -> "RotationSearchMatcher":
        return RotationSearchMatcher(self.base.with_settings(**overrides), self.verify)

    def compute_dtype(self, device: Optional[torch.device] = None) -> Optional[torch.dtype]:
        return self.base.compute_dtype(device or self.device)

    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Matches over the full feature sets: only image 0's turn-0 keypoints and image 1's kept turn match."""
        upright0 = torch.nonzero(keypoint_turns(feats0) == 0)[:, 0]
        turns1 = keypoint_turns(feats1)
        sub0 = _select(feats0, upright0, 0)
        counts: dict[int, int] = {}
        best: Optional[tuple[int, torch.Tensor, Matches]] = None
        for turns in QUARTER_TURNS:
            index1 = torch.nonzero(turns1 == turns)[:, 0]
            if len(index1) == 0:
                continue
            matches = self.base.match(sub0, _select(feats1, index1, turns)).cpu()
            counts[turns] = int(self.verify.inliers(sub0, _select(feats1, index1, 0), matches).sum())
            if best is None or counts[turns] > counts[best[0]]:
                best = (turns, index1, matches)
        matches0 = torch.full((len(feats0),), -1, dtype=torch.long)
        scores0 = torch.zeros(len(feats0), dtype=torch.float32)
        if best is None:
            return Matches(matches0, scores0, 0, {"turns": 0, "inliers_per_turn": counts})
        turns, index1, found = best
        valid = found.matches0 > -1
        matches0[upright0[valid]] = index1[found.matches0[valid]]
        scores0[upright0[valid]] = found.scores0[valid]
        return Matches(matches0, scores0, found.stop_layer,
                       {**found.info, "turns": turns, "inliers_per_turn": counts})


def with_rotation_search(extractor: Extractor, matcher: Matcher, verify: Optional[VerifyOptions] = None
                         ) -> tuple[RotationSearchExtractor, RotationSearchMatcher]:
    """``extractor`` and ``matcher`` wrapped for rotation search (see the module docstring)."""
    return RotationSearchExtractor(extractor), RotationSearchMatcher(matcher, verify)
