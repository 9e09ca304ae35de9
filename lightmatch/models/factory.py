"""Build extractors and matchers by name, with the options the CLI exposes."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from .. import weights as registry
from ..defaults import DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE, NO_KEYPOINT_CAP
from ..errors import ConfigError, WeightsError
from .aliked import MODELS as ALIKED_MODELS
from .base import Extractor, Matcher

EXTRACTORS = ("aliked", *ALIKED_MODELS, "disk", "superpoint", "sift", "xfeat")
MATCHERS = ("lightglue", "superglue", "nn")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{device}'") from exc


def feature_family(name: str) -> str:
    """The feature type a matcher's weights are trained for: the 128-d ALIKED variants are ``aliked``
    (``aliked-t16`` has 64-d descriptors and no trained matcher)."""
    return "aliked" if name.startswith("aliked") and name != "aliked-t16" else name


def descriptor_size(features: str) -> int:
    """Size of the descriptors extractor ``features`` gives (with its official weights)."""
    return {"aliked-t16": 64, "superpoint": 256, "xfeat": 64}.get(features, 128)


def check_matcher_weights(name: str, features: str, path: Optional[str]) -> None:
    """Refuse matcher weights made for other features than ``features`` (a :class:`WeightsError` naming both),
    before any image is read: the family recorded in ``matcher.json`` beside the file (training writes it) or
    known for an official file, else the descriptor size of the weights' input layer. ``path`` None (the
    registry's file for the features) and the nearest-neighbour matcher always pass."""
    if path is None or name == "nn":
        return
    contract = registry.matcher_contract(path)
    family, size = feature_family(features), descriptor_size(features)
    if contract.matcher is not None and contract.matcher != name:
        raise WeightsError(f"{path}: {contract.matcher} weights, not {name} weights (--matcher {name}); use "
                           f"--matcher {contract.matcher}")
    if contract.features is not None and contract.features != family:
        raise WeightsError(f"{path}: matcher weights for {contract.features} features ({contract.source}), not "
                           f"for --features {features}; use --features {contract.features} or weights trained on "
                           f"{family}")
    if contract.descriptor_dim is not None and contract.descriptor_dim != size:
        raise WeightsError(f"{path}: matcher weights for {contract.descriptor_dim}-d descriptors (their input "
                           f"layer), but --features {features} gives {size}-d; use weights trained on {family}")
    if contract.scale_ori and family != "sift":
        raise WeightsError(f"{path}: matcher weights that encode keypoint scale and orientation (trained on SIFT), "
                           f"which --features {features} does not give; use --features sift")


def _drop_none(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def load_extractor(name: str = "aliked", max_keypoints: Optional[int] = DEFAULT_MAX_KEYPOINTS,
                   resize: Optional[int] = DEFAULT_RESIZE,
                   device: str | torch.device = "auto", weights: Optional[str] = None, upsample: bool = True,
                   **options: Any) -> Extractor:
    """Build extractor ``name`` with its pretrained weights on ``device``.

    ``options`` are passed to the extractor class (e.g. ``detection_threshold``, ``nms`` for ALIKED). ``upsample``
    False keeps images smaller than ``resize`` at their size (see :class:`~lightmatch.models.base.Extractor`).
    """
    if resize is not None and resize < 1:
        raise ConfigError(f"resize must be a long side of at least 1 px, or None for the original size; got {resize}")
    if max_keypoints is not None and max_keypoints < 1 and max_keypoints != -1:
        raise ConfigError(f"max_keypoints must be at least 1, or -1 / None for no cap; got {max_keypoints}")
    cap = NO_KEYPOINT_CAP if max_keypoints is None else max_keypoints
    device = resolve_device(device) if isinstance(device, str) else device
    options = dict(_drop_none(options), upsample=upsample)
    builders: dict[str, Callable[[], Extractor]] = {}
    if name.startswith("aliked"):
        from .aliked import ALIKED
        model = "aliked-n16" if name == "aliked" else name
        builders[name] = lambda: ALIKED(model=model, max_keypoints=cap, resize=resize,
                                        weights_path=weights, **options)
    elif name == "disk":
        from .disk import DISK
        builders[name] = lambda: DISK(max_keypoints=cap, resize=resize, weights_path=weights, **options)
    elif name == "superpoint":
        from .superpoint import SuperPoint
        builders[name] = lambda: SuperPoint(max_keypoints=cap, resize=resize, weights_path=weights,
                                            **options)
    elif name == "sift":
        from .sift import SIFT
        builders[name] = lambda: SIFT(max_keypoints=cap, resize=resize, **options)
    elif name == "xfeat":
        from .xfeat import XFeat
        builders[name] = lambda: XFeat(max_keypoints=cap, resize=resize, weights_path=weights,
                                       **options)
    if name not in builders:
        raise ConfigError(f"unknown extractor '{name}': choose from {', '.join(EXTRACTORS)}")
    return builders[name]().to(device)


def load_matcher(name: str = "lightglue", features: str = "aliked", device: str | torch.device = "auto",
                 weights: Optional[str] = None, **options: Any) -> Matcher:
    """Build matcher ``name`` for ``features`` (the extractor's name) on ``device``.

    A pair with no trained weights (e.g. SuperGlue on DISK) is a :class:`ConfigError`.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    options = _drop_none(options)
    family = feature_family(features)
    check_matcher_weights(name, features, weights)
    if name == "lightglue":
        from .lightglue import VARIANTS, LightGlue
        if family == "xfeat":
            from .xfeat import lighterglue
            matcher: Matcher = lighterglue(weights_path=weights, **options)
        elif family not in VARIANTS:
            raise ConfigError(f"no LightGlue weights for features '{features}' "
                              f"(LightGlue works with {', '.join(VARIANTS)}, xfeat); try --matcher nn")
        else:
            matcher = LightGlue(family, weights_path=weights, **options)
    elif name == "superglue":
        if family != "superpoint":
            raise ConfigError(f"SuperGlue is trained for SuperPoint features only, not '{features}'; "
                              "use --features superpoint or --matcher lightglue|nn")
        from .superglue import SuperGlue
        matcher = SuperGlue(weights_path=weights, **options)
    elif name == "nn":
        from .nearest_neighbor import NearestNeighborMatcher
        matcher = NearestNeighborMatcher(**options)
    else:
        raise ConfigError(f"unknown matcher '{name}': choose from {', '.join(MATCHERS)}")
    if name == "nn":
        matcher.weights_id = "none"
    else:  # the registry entry the matcher loads by default, or the explicit file
        default = matcher.variant.weights if name == "lightglue" else matcher.weights_name(matcher.variant)
        matcher.weights_id = registry.identity(default, weights)
    return matcher.to(device)
