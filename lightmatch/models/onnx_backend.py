"""ONNX Runtime as the runtime of a whole extractor and matcher (``--backend onnxruntime``, the extra
``pip install "lightmatch[onnx]"``): our torch models exported once (:mod:`lightmatch.export.onnx`, cached by their
weights) and run through :mod:`lightmatch.runtime.onnx_runner` behind the :class:`Extractor` / :class:`Matcher`
contract, so every feature of ``match`` (batches, resume, verification, rotation search) works unchanged
(:mod:`lightmatch.export.backend` makes the export and wraps it).

Preprocessing (colour, resize) stays torch's, so the network sees the image the torch extractor sees; the stores
record ``backend: onnxruntime`` in the extractor's and the matcher's settings.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime.onnx_runner import FORMAT_VERSION, NumpyFeatures, OnnxPipeline
from ..types import Features, Matches
from .base import Extractor, Matcher

BACKEND = "onnxruntime"


def cache_root() -> Path:
    """Where exports for ``--backend onnxruntime`` are kept: ``$LIGHTMATCH_CACHE_DIR/onnx`` or
    ``~/.cache/lightmatch/onnx``."""
    env = os.environ.get("LIGHTMATCH_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "lightmatch") / "onnx"


def export_key(extractor: Extractor, matcher: Matcher) -> str:
    """A digest of what the graphs depend on: the models' classes, weights and baked-in settings."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION} {torch.__version__}".encode())
    for model in (extractor, matcher):
        fixed = {k: getattr(model, k, None) for k in ("name", "nms", "nms_radius", "variant")}
        digest.update(f"{type(model).__name__} {fixed}".encode())
        for key, value in model.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def numpy_features(feats: Features) -> NumpyFeatures:
    def array(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
        return None if t is None else t.detach().float().cpu().numpy()

    return NumpyFeatures(array(feats.keypoints), array(feats.scores), array(feats.descriptors), feats.image_size,
                         array(feats.scales), array(feats.oris))


class OnnxExtractor(Extractor):
    """An exported extractor graph run by ONNX Runtime; settings (``max_keypoints``, ``detection_threshold``,
    ``resize``) act as on the torch extractor it was exported from."""

    backend = BACKEND

    def __init__(self, base: Extractor, pipeline: OnnxPipeline, graph: type) -> None:
        super().__init__(resize=base.resize, precision="fp32", upsample=base.upsample)
        self.runner = pipeline.extractor
        self.name, self.descriptor_dim, self.grayscale = base.name, base.descriptor_dim, base.grayscale
        self._graph = graph  # the exported graph's class: the attributes its inputs come from
        # the settings the store records and those the graph's inputs come from, as the torch extractor holds them
        for key in (*base.detector_settings(), *self._graph.SOURCES):
            setattr(self, key, getattr(base, key))
        self._base_type = type(base)

    def detector_settings(self) -> dict:
        return self._base_type.detector_settings(self)

    def budget_settings(self, n: int) -> tuple[dict, bool]:
        return self._base_type.budget_settings(self, n)

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.runner.max_keypoints, self.runner.detection_threshold = self._graph.inputs(self)
        keypoints, scores, descriptors = self.runner.run(image.detach().float().cpu().numpy())
        return torch.from_numpy(keypoints), torch.from_numpy(scores), torch.from_numpy(descriptors)


class OnnxMatcher(Matcher):
    """An exported matcher run by ONNX Runtime (LightGlue: its layers driven one by one, early exit and pruning as
    in torch; several pairs in one padded batch by :meth:`match_many`). The settings of the torch matcher's
    ``matching_settings()`` act as on it: they are the runner's stated settings (``SETTINGS``), given to it on
    every call."""

    backend = BACKEND

    def __init__(self, base: Matcher, pipeline: OnnxPipeline) -> None:
        super().__init__()
        self.runner = pipeline.matcher
        self.name = base.name
        self.precision = "fp32"
        self._keys = tuple(base.matching_settings())
        unknown = sorted(set(self._keys) - set(self.runner.SETTINGS))
        if unknown:
            raise ConfigError(f"--backend {BACKEND}: the exported {base.name} takes no setting {', '.join(unknown)}")
        for key in self._keys:
            setattr(self, key, getattr(base, key))
        layers = pipeline.manifest["matcher"].get("layers")  # the layer graphs: "stopped at layer k of L"
        self._num_layers = len(layers) if layers is not None else None

    @property
    def num_layers(self) -> Optional[int]:
        return self._num_layers

    def matching_settings(self) -> dict:
        return {key: getattr(self, key) for key in self._keys}

    def match(self, feats0: Features, feats1: Features) -> Matches:
        return self.match_many([(feats0, feats1)])[0]

    def match_many(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        self.runner.configure(self.matching_settings())
        numpy_pairs = [(numpy_features(f0), numpy_features(f1)) for f0, f1 in pairs]
        results = ([self.runner.match(*numpy_pairs[0])] if len(numpy_pairs) == 1  # the per-pair graphs: no padding
                   else self.runner.match_many(numpy_pairs))
        return [Matches(torch.from_numpy(out.matches0), torch.from_numpy(out.scores0), stop_layer=out.stop_layer,
                        info=out.info) for out in results]

