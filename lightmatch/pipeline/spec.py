"""The one recipe from settings to models: a :class:`ModelSpec` names the extractor, the matcher, their weights and
settings, the precision, device and backend, and :meth:`ModelSpec.load` builds them. The CLI, Ray workers (which
receive the spec, not a closure), ``train``, ``eval``, ``benchmark`` and ``export`` all build from it.

A spec is plain data: :meth:`ModelSpec.to_dict` gives JSON-able values and :meth:`ModelSpec.from_dict` reads them
back, so a run's models can be written down, sent to another process and rebuilt the same.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..defaults import default_max_keypoints
from ..errors import ConfigError
from ..models import factory
from ..models.base import Extractor, Matcher

BACKENDS = ("torch", "openvino", "onnxruntime")
ORIGINAL_SIZE = -1  # ``resize``: the network sees the image at its own size


@dataclass(frozen=True)
class ModelSpec:
    """What to build: extractor ``extractor`` (a name of :data:`lightmatch.models.factory.EXTRACTORS`) with the
    keyword settings ``extractor_settings`` of :func:`~lightmatch.models.factory.load_extractor` (``max_keypoints``,
    default :func:`~lightmatch.defaults.default_max_keypoints`, -1 no cap; ``resize``, -1 the original size;
    ``upsample``, ``detection_threshold``, ``nms``, ...; None: the extractor's default), matcher ``matcher`` with
    the settings ``matcher_settings`` of :func:`~lightmatch.models.factory.load_matcher` (``depth_confidence``,
    ``variant``, ``ratio_threshold``, ...), weights files (None: the registry's), ``precision`` and ``device`` for both,
    ``backend`` (``torch``, ``openvino`` for DISK's network, ``onnxruntime`` for both models) and
    ``rotation_search`` (:mod:`lightmatch.pipeline.rotation`). The settings are copied in: the spec owns them."""

    extractor: str = "aliked"
    matcher: str = "lightglue"
    extractor_weights: Optional[str] = None
    matcher_weights: Optional[str] = None
    extractor_settings: Mapping[str, Any] = field(default_factory=dict)
    matcher_settings: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    device: str = "auto"
    backend: str = "torch"
    rotation_search: bool = False

    def __post_init__(self) -> None:
        for name in ("extractor_settings", "matcher_settings"):  # None: the model's default, as if not given
            settings = {k: v for k, v in copy.deepcopy(dict(getattr(self, name))).items() if v is not None}
            object.__setattr__(self, name, settings)
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend '{self.backend}': choose from {', '.join(BACKENDS)}")
        if self.backend == "openvino" and self.extractor != "disk":
            raise ConfigError(f"--backend {self.backend}: only DISK has one (the other extractors run faster in "
                              "torch; docs/benchmarks.md)")

    def replace(self, **changes: Any) -> "ModelSpec":
        """A new spec with ``changes``; this one is unchanged."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-able values (a new dict: changing it leaves the spec as it is)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelSpec":
        """The spec of :meth:`to_dict`'s ``values``; an unknown key is a :class:`ConfigError` naming it."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"model spec: unknown field(s) {', '.join(unknown)}")
        return cls(**copy.deepcopy(dict(values)))

    def load(self) -> tuple[Extractor, Matcher]:
        """The extractor and the matcher this spec describes, on its device (weights resolved and checked)."""
        device = factory.resolve_device(self.device)
        precision = {"precision": self.precision}
        extractor_options = {"max_keypoints": default_max_keypoints(self.extractor), **self.extractor_settings,
                             **precision}
        if extractor_options.get("resize") == ORIGINAL_SIZE:
            extractor_options["resize"] = None
        if self.backend == "openvino":
            extractor_options["backend"] = self.backend
        extractor = factory.load_extractor(self.extractor, device=device, weights=self.extractor_weights,
                                           **extractor_options)
        matcher_options = dict(self.matcher_settings, **(precision if self.matcher != "nn" else {}))
        matcher = factory.load_matcher(self.matcher, features=self.extractor, device=device,
                                       weights=self.matcher_weights, **matcher_options)
        if self.backend == "onnxruntime":
            from ..export.backend import onnx_models

            extractor, matcher = onnx_models(extractor, matcher)
        if self.rotation_search:
            from .rotation import with_rotation_search

            return with_rotation_search(extractor, matcher)
        return extractor, matcher
