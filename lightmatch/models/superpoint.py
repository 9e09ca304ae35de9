"""SuperPoint keypoint detector and descriptor (DeTone et al., CVPRW 2018).

The architecture and parameter names follow Magic Leap's release (``conv1a`` ... ``conv4b``, ``convPa``/``convPb``
for the detector head, ``convDa``/``convDb`` for the descriptor head), so ``superpoint_v1.pth`` (Magic Leap's, or
the identical copy in LightGlue's release) loads with ``strict=True``. The weights are under Magic Leap's
non-commercial licence and are not shipped; see ``lightmatch weights``.

The functional pieces (:func:`simple_nms`, :func:`select_keypoints`, :func:`sample_descriptors`) reproduce the
reference behaviour exactly and are usable on their own.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import weights
from ..errors import ConfigError
from .base import Extractor


def simple_nms(scores: torch.Tensor, nms_radius: int) -> torch.Tensor:
    """Non-maximum suppression of a dense score map, as SuperPoint's reference.

    A pixel survives when it is the maximum of its ``(2r+1)²`` window; two more rounds recover maxima that were
    only suppressed by a point that was itself suppressed. ``r = 0`` keeps every pixel.

    Args:
        scores: ``(B, H, W)`` score map.
        nms_radius: suppression radius ``r`` in pixels, ``>= 0``.

    Returns:
        ``(B, H, W)`` scores with non-maxima set to 0.
    """
    if nms_radius < 0:
        raise ConfigError(f"nms_radius must be >= 0, got {nms_radius}")

    def max_pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=nms_radius * 2 + 1, stride=1, padding=nms_radius)

    zeros = torch.zeros_like(scores)
    max_mask = scores == max_pool(scores)
    for _ in range(2):
        supp_mask = max_pool(max_mask.float()) > 0
        supp_scores = torch.where(supp_mask, zeros, scores)
        new_max_mask = supp_scores == max_pool(supp_scores)
        max_mask = max_mask | (new_max_mask & ~supp_mask)
    return torch.where(max_mask, scores, zeros)


def select_keypoints(
    scores: torch.Tensor,
    threshold: Optional[float],
    border: int,
    max_keypoints: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints of one (already suppressed) score map, as SuperPoint's reference.

    Pixels above ``threshold`` (all pixels when ``threshold`` is None), not within ``border`` pixels of the edge,
    in row-major order; then, when ``max_keypoints >= 0`` and there are more, the ``max_keypoints`` best by score
    (sorted by decreasing score).

    Args:
        scores: ``(H, W)`` score map.

    Returns:
        keypoints ``(N, 2)`` float ``(x, y)`` pixel coordinates and their scores ``(N,)``.
    """
    h, w = scores.shape
    valid = torch.zeros_like(scores, dtype=torch.bool)
    valid[border:h - border, border:w - border] = True
    if threshold is not None:
        valid &= scores > threshold
    ij = torch.nonzero(valid)
    kept = scores[valid]
    if 0 <= max_keypoints < len(ij):
        kept, idx = torch.topk(kept, max_keypoints, dim=0, sorted=True)
        ij = ij[idx]
    return ij.flip(1).to(scores.dtype), kept


def sample_descriptors(keypoints: torch.Tensor, descriptors: torch.Tensor, s: int = 8) -> torch.Tensor:
    """Bilinearly interpolate a coarse descriptor map at keypoints, then L2-normalise, as SuperPoint's reference.

    The reference's convention, kept for compatibility with the official weights: a keypoint at pixel ``x`` is
    sampled at map column ``u = (x - s/2 + 0.5) / (w*s - s/2 - 0.5) * (w - 1)`` (``grid_sample`` with
    ``align_corners=True``, zeros outside the map), and likewise for rows with ``h``; the first cell centre is thus at
    pixel ``s/2 - 0.5``, the last at the last pixel.

    Args:
        keypoints: ``(B, N, 2)`` ``(x, y)`` in pixels of the full-resolution image.
        descriptors: ``(B, C, h, w)`` descriptor map at stride ``s``.

    Returns:
        ``(B, C, N)`` unit-norm descriptors.
    """
    b, c, h, w = descriptors.shape
    if keypoints.shape[1] == 0:
        return descriptors.new_zeros((b, c, 0))
    kp = keypoints - s / 2 + 0.5
    kp = kp / kp.new_tensor([w * s - s / 2 - 0.5, h * s - s / 2 - 0.5])[None]
    kp = kp * 2 - 1
    desc = F.grid_sample(descriptors, kp.view(b, 1, -1, 2).to(descriptors.dtype), mode="bilinear",
                         align_corners=True)
    return F.normalize(desc.reshape(b, c, -1), p=2, dim=1)


class SuperPoint(Extractor):
    """SuperPoint with Magic Leap's architecture and parameter names.

    Args:
        resize: long side of the network image (None keeps the original size).
        nms_radius: radius of the non-maximum suppression, in pixels of the network image.
        keypoint_threshold: minimum detection score (the reference's 0.005; LightGlue's release uses 0.0005); a
            negative value disables the threshold (with ``max_keypoints``: exactly that many, LightGlue's
            benchmark protocol).
        max_keypoints: keep the best ``k`` by score; -1 (or None) keeps all.
        remove_borders: discard keypoints within this many pixels of the border.
        exact_keypoints: benchmark mode: the detection threshold is disabled and exactly this many keypoints are
            returned (the best by score after NMS, suppressed pixels filling up when there are too few maxima;
            fewer only if the image has fewer pixels off the border).
        descriptor_dim: descriptor size (256 for the official weights).
        detection_threshold: alias of ``keypoint_threshold`` (LightGlue's name, used by the CLI); wins when given.
        weights_path: explicit ``superpoint_v1.pth``; default: the registry's resolution order. With
            ``state_dict`` it only names the source in error messages.
        state_dict: an already loaded checkpoint (skips file resolution).
        pretrained: load weights (default); False leaves the random initialisation (training, tests).
        precision: ``fp32`` (default), ``bf16``/``fp16`` autocast of the network, ``auto`` (see :class:`Extractor`).

    The module is created in eval mode. Input to :meth:`forward` is a grayscale image in [0, 1], not normalised.
    """

    name = "superpoint"
    grayscale = True

    def __init__(
        self,
        resize: Optional[int] = 1024,
        nms_radius: int = 4,
        keypoint_threshold: float = 0.005,
        max_keypoints: Optional[int] = -1,
        remove_borders: int = 4,
        exact_keypoints: Optional[int] = None,
        descriptor_dim: int = 256,
        detection_threshold: Optional[float] = None,
        weights_path: Optional[str | os.PathLike] = None,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
        pretrained: bool = True,
        precision: str = "fp32",
        upsample: bool = True,
    ) -> None:
        super().__init__(resize=resize, precision=precision, upsample=upsample)
        max_keypoints = -1 if max_keypoints is None else int(max_keypoints)
        if max_keypoints == 0 or max_keypoints < -1:
            raise ConfigError(f"superpoint: max_keypoints must be positive or -1 (all), got {max_keypoints}")
        if exact_keypoints is not None and exact_keypoints <= 0:
            raise ConfigError(f"superpoint: exact_keypoints must be positive, got {exact_keypoints}")
        if nms_radius < 0 or remove_borders < 0:
            raise ConfigError("superpoint: nms_radius and remove_borders must be >= 0")
        self.nms_radius = int(nms_radius)
        self.keypoint_threshold = float(keypoint_threshold if detection_threshold is None else detection_threshold)
        self.max_keypoints = max_keypoints
        self.remove_borders = int(remove_borders)
        self.exact_keypoints = exact_keypoints
        self.descriptor_dim = int(descriptor_dim)

        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.conv1a = nn.Conv2d(1, c1, kernel_size=3, stride=1, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, kernel_size=3, stride=1, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, kernel_size=3, stride=1, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, kernel_size=3, stride=1, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, kernel_size=3, stride=1, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, kernel_size=3, stride=1, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, kernel_size=3, stride=1, padding=1)
        self.convPa = nn.Conv2d(c4, c5, kernel_size=3, stride=1, padding=1)
        self.convPb = nn.Conv2d(c5, 65, kernel_size=1, stride=1, padding=0)
        self.convDa = nn.Conv2d(c4, c5, kernel_size=3, stride=1, padding=1)
        self.convDb = nn.Conv2d(c5, self.descriptor_dim, kernel_size=1, stride=1, padding=0)

        if state_dict is None and pretrained:
            state_dict = weights.load_state_dict("superpoint", weights_path)
        if state_dict is not None:
            weights.load_into(self, state_dict, "superpoint", str(weights_path or ""))
        self.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path_hint: str = "", **opts) -> "SuperPoint":
        """Build with ``opts`` and load ``state`` strictly (a :class:`WeightsError` names missing/extra keys)."""
        return cls(state_dict=state, weights_path=path_hint or None, **opts)

    @classmethod
    def from_weights(cls, path: Optional[str | os.PathLike] = None, resize: Optional[int] = 1024,
                     **opts) -> "SuperPoint":
        """Load ``superpoint_v1.pth`` from ``path`` or the weights resolution order (see :mod:`lightmatch.weights`)."""
        return cls(resize=resize, weights_path=path, **opts)

    @classmethod
    def for_benchmark(cls, num_keypoints: int, path: Optional[str | os.PathLike] = None,
                      resize: Optional[int] = 1024) -> "SuperPoint":
        """Weights loaded, threshold disabled, exactly ``num_keypoints`` per image (LightGlue's latency protocol)."""
        return cls(resize=resize, weights_path=path, exact_keypoints=num_keypoints)

    def budget_settings(self, n: int) -> tuple[dict, bool]:
        return {"exact_keypoints": n, "max_keypoints": n}, True

    def detector_settings(self) -> dict:
        return {"max_keypoints": self.max_keypoints, "nms_radius": self.nms_radius}

    # ------------------------------------------------------------------ network
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense outputs of the network.

        Args:
            image: ``(B, 1, H, W)`` grayscale in [0, 1].

        Returns:
            scores ``(B, 8h, 8w)`` per-pixel keypoint probabilities (before NMS), with ``h = H // 8``,
            ``w = W // 8``; descriptors ``(B, D, h, w)``, L2-normalised along ``D``.
        """
        x = self.relu(self.conv1a(image))
        x = self.relu(self.conv1b(x))
        x = self.pool(x)
        x = self.relu(self.conv2a(x))
        x = self.relu(self.conv2b(x))
        x = self.pool(x)
        x = self.relu(self.conv3a(x))
        x = self.relu(self.conv3b(x))
        x = self.pool(x)
        x = self.relu(self.conv4a(x))
        x = self.relu(self.conv4b(x))

        scores = self.convPb(self.relu(self.convPa(x)))
        scores = F.softmax(scores, 1)[:, :-1]
        b, _, h, w = scores.shape
        scores = scores.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8)
        scores = scores.permute(0, 1, 3, 2, 4).reshape(b, h * 8, w * 8)

        desc = self.convDb(self.relu(self.convDa(x)))
        desc = F.normalize(desc, p=2, dim=1)
        return scores, desc

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(1, H, W)`` grayscale in [0, 1] -> keypoints ``(N, 2)`` ``(x, y)`` in its pixels, scores ``(N,)``,
        descriptors ``(N, D)``."""
        if image.dim() != 3 or image.shape[0] != 1:
            raise ConfigError(f"superpoint: expected a (1, H, W) grayscale image, got shape {tuple(image.shape)}")
        dense_scores, dense_desc = self(image[None])
        scores = simple_nms(dense_scores, self.nms_radius)[0]
        if self.exact_keypoints is not None:
            kpts, kscores = select_keypoints(scores, None, self.remove_borders, self.exact_keypoints)
        else:
            threshold = self.keypoint_threshold if self.keypoint_threshold >= 0 else None
            kpts, kscores = select_keypoints(scores, threshold, self.remove_borders, self.max_keypoints)
        desc = sample_descriptors(kpts[None], dense_desc, 8)[0]
        return kpts, kscores, desc.transpose(0, 1)
