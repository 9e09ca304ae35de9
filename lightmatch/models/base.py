"""The two model interfaces: an :class:`Extractor` turns an image into :class:`Features`, a :class:`Matcher` turns
two :class:`Features` into :class:`Matches`."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Mapping, Optional, Sequence, TypeVar

import kornia
import torch
from torch import nn

from .. import precision as amp
from ..errors import ConfigError
from ..types import Features, Matches

Model = TypeVar("Model", bound=nn.Module)


def with_values(model: Model, values: dict[str, Any]) -> Model:
    """A copy of ``model`` sharing its weights and submodules, with its own registries of them (so registering or
    moving one on the copy leaves ``model`` as it is) and the plain attributes ``values`` (deep-copied) replaced."""
    out = copy.copy(model)
    for registry in ("_parameters", "_buffers", "_modules"):
        out.__dict__[registry] = copy.copy(model.__dict__[registry])
    for key, value in copy.deepcopy(values).items():
        setattr(out, key, value)
    return out


def recorded_settings(own: dict[str, Any], precision: str) -> dict[str, Any]:
    """A model's own settings without those left unset (None), and its precision when lower than fp32: the start of
    what stores record (see :meth:`Extractor.settings`)."""
    out = {key: value for key, value in own.items() if value is not None}
    if precision not in ("auto", "fp32"):  # lower precision gives other results
        out["precision"] = precision
    return out


def resize_for_network(image: torch.Tensor, long_side: Optional[int],
                       upsample: bool = True) -> tuple[torch.Tensor, tuple[float, float]]:
    """Resize ``(C, H, W)`` so its long side is ``long_side`` (antialiased bilinear, as LightGlue's preprocessing).

    Returns the resized image and the scale ``(sx, sy) = (new / old)`` per axis. ``None`` keeps the size; so does
    a smaller image when not ``upsample`` (``long_side`` is then an upper bound, as hloc's ``resize_max``).
    """
    h, w = image.shape[-2:]
    if long_side is not None and max(h, w) != long_side and (upsample or max(h, w) > long_side):
        image = kornia.geometry.transform.resize(image[None], long_side, side="long", antialias=True)[0]
    return image, (image.shape[-1] / w, image.shape[-2] / h)


def to_original_pixels(keypoints: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Map ``(N, 2)`` keypoints found on a resized image back: ``(k + 0.5) / scale - 0.5``."""
    s = keypoints.new_tensor(scale)
    return (keypoints + 0.5) / s - 0.5


class Extractor(nn.Module):
    """Detects and describes local features.

    :meth:`extract` is :meth:`preprocess` (colour mode, resize for the network; runs anywhere, e.g. in a loader
    thread) followed by :meth:`run` (the network, keypoints mapped back to original pixels). Subclasses implement
    :meth:`detect_and_describe` on the prepared image, and override :meth:`run` only when they return more than
    keypoints, scores and descriptors (SIFT).

    ``precision``: ``fp32`` (default; the reference's numbers), ``bf16`` or ``fp16`` (autocast of the network;
    subclasses keep the layers that have no such kernel in fp32), or ``auto`` (fp32 until a lower precision is
    validated for the extractor on the device: none is, so fp32); resolved by :mod:`lightmatch.precision`.

    ``upsample``: whether an image smaller than ``resize`` is enlarged to it (True, as LightGlue's preprocessing)
    or kept at its size (False: ``resize`` is an upper bound, as hloc's ``resize_max``).

    :meth:`settings` states what changes the features, as stores record and compare it.
    """

    name: str = "extractor"
    descriptor_dim: int = 0
    grayscale: bool = False
    upsample: bool = True
    backend: str = "torch"  # the runtime of the network
    auto_precision: Mapping[str, str] = {}  # what ``auto`` runs per device type (see lightmatch.precision)

    def __init__(self, resize: Optional[int] = 1024, precision: str = "fp32", upsample: bool = True) -> None:
        super().__init__()
        self.resize = resize
        self.precision = amp.check(precision)
        self.upsample = upsample

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    @property
    def compute_dtype(self) -> Optional[torch.dtype]:
        """The compute dtype of the network on its device (:func:`lightmatch.precision.resolve`), None for fp32."""
        return amp.resolve(self.precision, self.device, self.auto_precision)

    def run_precision(self) -> str:
        """The arithmetic the network runs in: :attr:`precision` with ``auto`` resolved."""
        return amp.name(self.compute_dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to :attr:`compute_dtype` on the extractor's device (a no-op in fp32)."""
        return amp.autocast(self.compute_dtype, self.device)

    # ------------------------------------------------------------------ settings
    def detector_settings(self) -> dict[str, Any]:
        """The extractor's own settings that change its keypoints, in the order stores record them (None: unset,
        not recorded)."""
        return {}

    def settings(self) -> dict[str, Any]:
        """What stores record and compare (``lightmatch_extractor_settings``): :meth:`detector_settings`, the
        precision when lower than fp32, the backend when not torch (within 1 px), and ``upsample`` when False."""
        out = recorded_settings(self.detector_settings(), self.precision)
        if self.backend != "torch":
            out["backend"] = self.backend
        if not self.upsample:
            out["upsample"] = False
        return copy.deepcopy(out)

    def with_settings(self, **overrides: Any) -> "Extractor":
        """This extractor with ``resize``, ``upsample`` or some of its :meth:`detector_settings` replaced, as a new
        extractor sharing the weights (this one is unchanged)."""
        unknown = set(overrides) - {"resize", "upsample", *self.detector_settings()}
        if unknown:
            raise ConfigError(f"extractor '{self.name}' has no setting {', '.join(sorted(unknown))}")
        return with_values(self, overrides)

    # ------------------------------------------------------------------ keypoint budget
    def budget_settings(self, n: int) -> tuple[dict[str, Any], bool]:
        """The settings that make this extractor return ``n`` keypoints per image with its detection threshold
        disabled, and whether the count is then exact (True) or only a cap (False, the default)."""
        if "max_keypoints" not in self.detector_settings():
            raise ConfigError(f"cannot set a keypoint count on extractor '{self.name}'")
        return {"max_keypoints": n}, False

    def with_keypoint_budget(self, n: int) -> tuple["Extractor", bool]:
        """This extractor returning ``n`` keypoints per image (see :meth:`budget_settings`), as a new extractor
        sharing the weights (this one is unchanged), and whether the count is exact."""
        settings, exact = self.budget_settings(n)
        return with_values(self, settings), exact

    # ------------------------------------------------------------------ extraction
    @torch.inference_mode()
    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        """``(C, H, W)`` float image in [0, 1] -> the network input ``(C', h, w)`` (colour mode of the extractor,
        long side ``resize``) on the image's device, and the scale ``(sx, sy)`` (network pixels per original pixel)."""
        if self.grayscale and image.shape[0] == 3:
            image = kornia.color.rgb_to_grayscale(image[None])[0]
        elif not self.grayscale and image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return resize_for_network(image, self.resize, self.upsample)

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(C, H, W)`` float image in [0, 1] -> keypoints ``(N, 2)`` in its pixels, scores ``(N,)``,
        descriptors ``(N, D)``."""
        raise NotImplementedError

    @torch.inference_mode()
    def run(self, image: torch.Tensor, scale: tuple[float, float], image_size: tuple[int, int]) -> Features:
        """Features of a :meth:`preprocess`-ed image, keypoints in the pixels of the original ``image_size``
        ``(W, H)``."""
        with self.autocast():
            kpts, scores, desc = self.detect_and_describe(image.to(self.device))
        return Features(
            keypoints=to_original_pixels(kpts.float(), scale).contiguous(),
            scores=scores.float().contiguous(),
            descriptors=desc.float().contiguous(),
            image_size=(int(image_size[0]), int(image_size[1])),
        )

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        """Extract features from a ``(C, H, W)`` float image in [0, 1] at original resolution."""
        h, w = image.shape[-2:]
        tensor, scale = self.preprocess(image.to(self.device))
        return self.run(tensor, scale, (int(w), int(h)))


class Matcher(nn.Module):
    """Matches the features of two images.

    ``weights_id``: the weights loaded, as stores record them (a registry name, ``sha256:<hex>`` of a file,
    ``none``); set by :func:`~lightmatch.models.factory.load_matcher`, None when not known.

    ``precision``: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (:mod:`lightmatch.precision`); matchers without a
    network (nearest neighbours) keep ``fp32``.

    :meth:`settings` states what changes the matches, as stores record and compare it; :attr:`num_layers` the
    depth of a layered matcher.
    """

    name: str = "matcher"
    backend: str = "torch"  # the runtime of the network
    weights_id: Optional[str] = None
    precision: str = "fp32"
    auto_precision: Mapping[str, str] = {}  # what ``auto`` runs per device type (see lightmatch.precision)

    @property
    def num_layers(self) -> Optional[int]:
        """How many layers the matcher has (for "layer k of L"); None for matchers without layers."""
        return None

    def matching_settings(self) -> dict[str, Any]:
        """The matcher's own settings that change its matches, in the order stores record them (None: unset, not
        recorded)."""
        return {}

    def settings(self) -> dict[str, Any]:
        """What stores record and compare (``lightmatch_matcher_settings``): :meth:`matching_settings`, the
        precision when lower than fp32, and the backend when not torch."""
        out = recorded_settings(self.matching_settings(), self.precision)
        if self.backend != "torch":
            out["backend"] = self.backend
        return copy.deepcopy(out)

    def with_settings(self, **overrides: Any) -> "Matcher":
        """This matcher with some of its :meth:`matching_settings` replaced, as a new matcher sharing the weights
        (this one is unchanged)."""
        unknown = set(overrides) - set(self.matching_settings())
        if unknown:
            raise ConfigError(f"matcher '{self.name}' has no setting {', '.join(sorted(unknown))}")
        return with_values(self, overrides)

    def compute_dtype(self, device: Optional[torch.device] = None) -> Optional[torch.dtype]:
        """The compute dtype on ``device`` (default: its own), None for fp32."""
        return amp.resolve(self.precision, device or self.device, self.auto_precision)

    def run_precision(self, device: Optional[torch.device] = None) -> str:
        """The arithmetic the matcher runs in on ``device`` (default: its own): its precision with ``auto``
        resolved."""
        return amp.name(self.compute_dtype(device))

    def autocast(self, device: Optional[torch.device] = None) -> contextlib.AbstractContextManager:
        """Autocast to :meth:`compute_dtype` on ``device`` (default: its own); a no-op in fp32."""
        device = device or self.device
        return amp.autocast(self.compute_dtype(device), device)

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.empty(0)).device

    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Match image 0's features to image 1's; see :class:`~lightmatch.types.Matches`."""
        raise NotImplementedError

    def match_many(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """Match several pairs; matchers that batch them (padded, masked) override this. Default: one by one."""
        return [self.match(f0, f1) for f0, f1 in pairs]
