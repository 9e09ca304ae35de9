"""Run a ``lightmatch export onnx`` folder with ONNX Runtime, numpy and OpenCV only (no torch).

    >>> from lightmatch.runtime.onnx_runner import OnnxPipeline
    >>> pipeline = OnnxPipeline("export_dir")
    >>> f0, f1 = pipeline.extract(pipeline.read_image("a.jpg")), pipeline.extract(pipeline.read_image("b.jpg"))
    >>> result = pipeline.match(f0, f1)   # result.matches0: (N0,) index into f1's keypoints or -1
    >>> results = pipeline.match_many([(f0, f1), (f1, f0)])   # several pairs in one padded batch

The folder's ``lightmatch_onnx.json`` (:data:`MANIFEST`) says everything the runner needs: the graphs, their inputs
and outputs, the image normalisation and the settings. LightGlue's adaptive depth (early exit) and width (pruning)
are decided here, between its per-layer graphs, exactly as :meth:`lightmatch.models.lightglue.LightGlue.match`
decides them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import ConfigError, InputError

MANIFEST = "lightmatch_onnx.json"
FORMAT = "lightmatch-onnx"
FORMAT_VERSION = 2


def import_onnxruntime():
    """``onnxruntime``, or a one-line error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError('the onnxruntime backend needs ONNX Runtime: pip install "lightmatch[onnx]"') from None
    return onnxruntime


def default_providers() -> list[str]:
    """TensorRT and CUDA execution providers when this ONNX Runtime has them, then the CPU's."""
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in wanted if p in available]


def read_manifest(folder: str | os.PathLike) -> dict:
    """The export's description, checked for its format."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"{folder}: not a lightmatch ONNX export (no {MANIFEST}; make one with "
                         "'lightmatch export onnx -o DIR')")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: format {manifest.get('format')} version {manifest.get('version')}, this runner "
                         f"reads {FORMAT} version {FORMAT_VERSION}")
    return manifest


class Sessions:
    """ONNX Runtime sessions of one export folder, made on first use."""

    def __init__(self, folder: str | os.PathLike, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        self.folder = Path(folder)
        self.providers = list(providers) if providers else default_providers()
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def __call__(self, name: str):
        if name not in self._sessions:
            ort = import_onnxruntime()
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
            path = self.folder / name
            if not path.is_file():
                raise InputError(f"{path}: missing from the export")
            self._sessions[name] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._sessions[name]

    def run(self, name: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self(name).run(None, inputs)


# ------------------------------------------------------------------------------------------------ extraction
def resize_long_side(image: np.ndarray, long_side: Optional[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """``(H, W[, C])`` float32 image resized so its long side is ``long_side`` as kornia's antialiased bilinear
    resize (a Gaussian blur of sigma ``(factor - 1) / 2`` when shrinking, then bilinear with half-pixel centres),
    which our torch extractors use. Returns the image and the scale ``(sx, sy)`` (new / old)."""
    h, w = image.shape[:2]
    if long_side is None or max(h, w) == long_side:
        return image, (1.0, 1.0)
    aspect = w / h
    new_h, new_w = (long_side, int(long_side * aspect)) if aspect < 1.0 else (int(long_side / aspect), long_side)
    fy, fx = h / new_h, w / new_w
    if max(fy, fx) > 1:
        sigmas = max((fy - 1.0) / 2.0, 0.001), max((fx - 1.0) / 2.0, 0.001)
        ks = [int(max(4.0 * s, 3)) for s in sigmas]
        ks = [k if k % 2 else k + 1 for k in ks]
        ks = [1 if h == 1 else ks[0], 1 if w == 1 else ks[1]]
        image = cv2.GaussianBlur(image, (ks[1], ks[0]), sigmaX=sigmas[1], sigmaY=sigmas[0],
                                 borderType=cv2.BORDER_REFLECT_101)
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, (new_w / w, new_h / h)


@dataclass
class NumpyFeatures:
    """Keypoints ``(N, 2)`` in original-image pixels, scores ``(N,)``, descriptors ``(N, D)``, the original size
    ``(W, H)``; scales and orientations only for features that have them."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    scales: Optional[np.ndarray] = None
    oris: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.keypoints)


class OnnxExtractorRunner:
    """An exported extractor graph: preprocess (colour, resize) in OpenCV, the graph in ONNX Runtime."""

    def __init__(self, spec: dict, sessions: Sessions) -> None:
        self.spec = spec
        self.sessions = sessions
        self.grayscale = spec["preprocess"]["color"] == "gray"
        self.resize: Optional[int] = spec["preprocess"]["resize"]
        self.max_keypoints = int(spec["settings"]["max_keypoints"])
        self.detection_threshold = float(spec["settings"]["detection_threshold"])

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """``(H, W)`` or ``(H, W, 3)`` RGB image, uint8 or float in [0, 1] -> the network input ``(C, h, w)``
        float32 and the scale ``(sx, sy)``."""
        image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        if image.ndim == 3 and self.grayscale:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        elif image.ndim == 2 and not self.grayscale:
            image = np.repeat(image[..., None], 3, axis=2)
        image, scale = resize_long_side(image, self.resize)
        return (image[None] if image.ndim == 2 else image.transpose(2, 0, 1)).copy(), scale

    def run(self, network_image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph on a ``(C, h, w)`` network image: keypoints in its pixels, scores, descriptors."""
        inputs = {"image": np.ascontiguousarray(network_image[None], dtype=np.float32),
                  "max_keypoints": np.array(self.max_keypoints, dtype=np.int64),
                  "detection_threshold": np.array(self.detection_threshold, dtype=np.float32)}
        keypoints, scores, descriptors = self.sessions.run(self.spec["file"], inputs)
        return keypoints, scores, descriptors

    def extract(self, image: np.ndarray) -> NumpyFeatures:
        """Features of an image at its original resolution (keypoints mapped back from the network image)."""
        h, w = image.shape[:2]
        tensor, scale = self.preprocess(image)
        keypoints, scores, descriptors = self.run(tensor)
        keypoints = (keypoints + 0.5) / np.array(scale, dtype=np.float32) - 0.5
        return NumpyFeatures(keypoints.astype(np.float32), scores, descriptors, (w, h))


# ------------------------------------------------------------------------------------------------ matching
@dataclass
class NumpyMatches:
    """``matches0`` ``(N0,)`` index into image 1 or -1, ``scores0`` ``(N0,)``, the layer the matcher stopped after
    (1-based; 0 when it did not run) and how many points of each image were pruned."""

    matches0: np.ndarray
    scores0: np.ndarray
    stop_layer: int = 0
    info: dict = field(default_factory=dict)


def normalize_keypoints(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """LightGlue's normalisation: ``(k - size / 2) / (max(size) / 2)`` with ``size`` ``(W, H)``, in float32."""
    size_ = np.array(size, dtype=np.float32)
    return ((keypoints.astype(np.float32) - size_ / 2) / (size_.max() / 2)).astype(np.float32)


def mutual_matches(best0: np.ndarray, arg0: np.ndarray, arg1: np.ndarray, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lightmatch.models.lightglue.filter_matches` on the row maxima (log-probabilities and columns) and the
    column argmaxima: matches0 (or -1) and their probabilities (0 where not mutual)."""
    mutual = arg1[arg0] == np.arange(len(arg0))
    scores = np.where(mutual, np.exp(best0), np.float32(0)).astype(np.float32)
    valid = mutual & (scores > np.float32(threshold))
    return np.where(valid, arg0, -1).astype(np.int64), scores


class MatcherRunner:
    """What :class:`OnnxPipeline`'s matchers share: the settings they take (:attr:`SETTINGS`, the keys of the torch
    matcher's ``matching_settings()``), read from the manifest and replaced by :meth:`configure`."""

    SETTINGS: tuple[str, ...] = ()

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.configure({key: spec["settings"].get(key) for key in self.SETTINGS})

    def configure(self, settings: dict) -> None:
        """Replace some of :attr:`SETTINGS` (a :class:`ConfigError` names a setting this matcher does not take)."""
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            raise ConfigError(f"the exported {self.spec['name']} matcher takes no setting {', '.join(unknown)} "
                              f"(it takes {', '.join(self.SETTINGS)})")
        for key, value in settings.items():
            setattr(self, key, value)

    def match(self, feats0: NumpyFeatures, feats1: NumpyFeatures) -> NumpyMatches:
        raise NotImplementedError

    def match_many(self, pairs: Sequence[tuple[NumpyFeatures, NumpyFeatures]]) -> list[NumpyMatches]:
        """Match several pairs; runners with batched graphs override this. Default: one by one."""
        return [self.match(f0, f1) for f0, f1 in pairs]


def _no_matches(m: int) -> NumpyMatches:
    return NumpyMatches(np.full(m, -1, np.int64), np.zeros(m, np.float32), 0, {"pruned0": 0, "pruned1": 0})


def compact(mask: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`lightmatch.models.padding.compact` in numpy: the valid entries of each row of ``mask`` ``(..., L)``
    moved to the front (in order) and every array ``(..., L, ...)`` cut to the largest number of valid entries."""
    length = int(mask.sum(-1).max()) if mask.size else 0
    order = np.argsort(~mask, axis=-1, kind="stable")[..., :length]
    out = [np.take_along_axis(mask, order, -1)]
    for a in arrays:
        out.append(np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - mask.ndim)), mask.ndim - 1))
    return tuple(out)


class OnnxLightGlueRunner(MatcherRunner):
    """LightGlue's exported graphs driven layer by layer, with early exit and pruning as the torch matcher: one pair
    (:meth:`match`, the per-pair graphs) or a padded, masked batch of pairs (:meth:`match_many`, the batch
    graphs)."""

    SETTINGS = ("depth_confidence", "width_confidence", "filter_threshold")

    def __init__(self, spec: dict, sessions: Sessions) -> None:
        super().__init__(spec)
        self.sessions = sessions
        self.pruning_min_points = int(spec["settings"]["pruning_min_points"])
        self.thresholds = np.array(spec["confidence_thresholds"], dtype=np.float32)
        self.n_layers = int(spec["n_layers"])
        self.add_scale_ori = bool(spec["add_scale_ori"])

    def positions(self, feats: NumpyFeatures) -> np.ndarray:
        positions = normalize_keypoints(feats.keypoints, feats.image_size)
        if self.add_scale_ori:
            if feats.scales is None or feats.oris is None:
                raise ConfigError("this LightGlue variant needs keypoint scales and orientations (SIFT features)")
            positions = np.concatenate([positions, feats.scales[:, None], feats.oris[:, None]], 1)
        return positions.astype(np.float32)

    def encode(self, feats: Sequence[NumpyFeatures]) -> list[np.ndarray]:
        """Tokens and rotary factors of the points of ``feats``, concatenated (one call of the encode graph)."""
        for f in feats:
            if f.descriptors.shape[-1] != self.spec["input_dim"]:
                raise ConfigError(f"the exported LightGlue expects {self.spec['input_dim']}-d descriptors, got "
                                  f"{f.descriptors.shape[-1]}-d")
        descriptors = np.concatenate([f.descriptors for f in feats]).astype(np.float32)
        positions = np.concatenate([self.positions(f) for f in feats])
        return self.sessions.run(self.spec["encode"], {"descriptors": descriptors, "positions": positions})

    def should_stop(self, confidence: np.ndarray, layer: int, num_points: np.ndarray) -> np.ndarray:
        """:meth:`LightGlue.should_stop` of the unpruned points' ``confidence`` ``(..., T)`` (masked points:
        +inf), ``num_points`` ``(...)`` before pruning."""
        unconfident = (confidence < self.thresholds[layer]).sum(-1).astype(np.float32)
        return np.float32(1.0) - unconfident / num_points.astype(np.float32) > np.float32(self.depth_confidence)

    def prune_mask(self, matchability: np.ndarray, confidence: Optional[np.ndarray], layer: int) -> np.ndarray:
        """:meth:`LightGlue.prune_mask`: the points to keep."""
        keep = matchability > np.float32(1 - self.width_confidence)
        if confidence is not None:
            keep |= confidence <= self.thresholds[layer]
        return keep

    def match(self, feats0: NumpyFeatures, feats1: NumpyFeatures) -> NumpyMatches:
        """:meth:`lightmatch.models.lightglue.LightGlue.match` on the exported graphs."""
        m, n = len(feats0), len(feats1)
        if m == 0 or n == 0:
            return _no_matches(m)
        x, cos, sin = self.encode([feats0, feats1])
        x0, x1, cos0, cos1, sin0, sin1 = x[:m], x[m:], cos[:m], cos[m:], sin[:m], sin[m:]
        ind0, ind1 = np.arange(m), np.arange(n)
        early_stop, prune = self.depth_confidence > 0, self.width_confidence > 0
        for i in range(self.n_layers):
            x0, x1, conf0, conf1, match0, match1 = self.sessions.run(
                self.spec["layers"][i], {"x0": x0, "x1": x1, "cos0": cos0, "sin0": sin0, "cos1": cos1, "sin1": sin1})
            if i == self.n_layers - 1:
                break
            if early_stop and self.should_stop(np.concatenate([conf0, conf1]), i, np.array(m + n)):
                break
            if prune:
                keep0 = self.keep(match0, conf0 if early_stop else None, i)
                keep1 = self.keep(match1, conf1 if early_stop else None, i)
                if not keep0.all():
                    x0, cos0, sin0, ind0 = x0[keep0], cos0[keep0], sin0[keep0], ind0[keep0]
                if not keep1.all():
                    x1, cos1, sin1, ind1 = x1[keep1], cos1[keep1], sin1[keep1], ind1[keep1]
                if len(x0) == 0 or len(x1) == 0:
                    break
        return self.final_matches(x0, x1, ind0, ind1, m, n, i)

    def keep(self, matchability: np.ndarray, confidence: Optional[np.ndarray], layer: int) -> np.ndarray:
        """:meth:`prune_mask` for one image's points (all kept at or below the pruning minimum)."""
        if len(matchability) <= self.pruning_min_points:
            return np.ones(len(matchability), dtype=bool)
        return self.prune_mask(matchability, confidence, layer)

    def final_matches(self, x0: np.ndarray, x1: np.ndarray, ind0: np.ndarray, ind1: np.ndarray, m: int, n: int,
                      layer: int) -> NumpyMatches:
        """Matches from the tokens left after ``layer`` (``x0`` ``(M', D)``, ``x1`` ``(N', D)``), whose original
        indices are ``ind0`` and ``ind1`` among the pair's ``m`` and ``n`` points."""
        matches0 = np.full(m, -1, np.int64)
        scores0 = np.zeros(m, np.float32)
        if len(x0) and len(x1):
            best0, arg0, arg1 = self.sessions.run(self.spec["assign"][layer], {"x0": x0, "x1": x1})
            pm0, ps0 = mutual_matches(best0, arg0, arg1, self.filter_threshold)
            matches0[ind0] = np.where(pm0 == -1, -1, ind1[np.clip(pm0, 0, None)])
            scores0[ind0] = ps0
        return NumpyMatches(matches0, scores0, layer + 1, {"pruned0": m - len(ind0), "pruned1": n - len(ind1)})

    def match_many(self, pairs: Sequence[tuple[NumpyFeatures, NumpyFeatures]]) -> list[NumpyMatches]:
        """:meth:`lightmatch.models.lightglue.LightGlue.match_many` on the batch graphs: the pairs padded to one
        point count and masked, early exit and pruning decided per pair, finished pairs leaving the batch; the
        matches of :meth:`match` pair by pair (up to float rounding)."""
        results: list[Optional[NumpyMatches]] = [None] * len(pairs)
        todo = []
        for k, (f0, f1) in enumerate(pairs):
            if len(f0) and len(f1):
                todo.append(k)
            else:
                results[k] = _no_matches(len(f0))
        if not todo:
            return results  # type: ignore[return-value]
        feats = [f for k in todo for f in pairs[k]]
        counts = np.array([len(f) for f in feats]).reshape(-1, 2)  # (B, 2)
        tokens = self.encode(feats)
        b, length = len(todo), int(counts.max())
        starts = np.concatenate([[0], np.cumsum(counts.reshape(-1))])
        x, cos, sin = (np.zeros((b * 2, length, a.shape[-1]), np.float32) for a in tokens)
        mask = np.zeros((b * 2, length), bool)
        for j in range(2 * b):
            size = starts[j + 1] - starts[j]
            for padded, flat in zip((x, cos, sin), tokens):
                padded[j, :size] = flat[starts[j]:starts[j + 1]]
            mask[j, :size] = True
        x, cos, sin = (a.reshape(b, 2, length, -1) for a in (x, cos, sin))
        mask = mask.reshape(b, 2, length)
        index = np.broadcast_to(np.arange(length), mask.shape)  # original point indices
        active = np.arange(b)  # the pair (among todo) of each row of the batch
        early_stop, prune = self.depth_confidence > 0, self.width_confidence > 0
        for i in range(self.n_layers):
            x, confidence, matchability = self.sessions.run(self.spec["batch_layers"][i],
                                                            {"x": x, "mask": mask, "cos": cos, "sin": sin})
            done = np.full(len(active), i == self.n_layers - 1)
            if i < self.n_layers - 1:
                if early_stop:
                    masked = np.where(mask, confidence, np.float32(np.inf)).reshape(len(active), -1)
                    done = self.should_stop(masked, i, counts[active].sum(-1))
                if prune:
                    keep = self.prune_mask(matchability, confidence if early_stop else None, i)
                    keep |= (mask.sum(-1) <= self.pruning_min_points)[..., None]
                    mask = np.where(done[:, None, None], mask, mask & keep)
                    done |= (mask.sum(-1) == 0).any(-1)
            for row in np.flatnonzero(done):
                valid0, valid1 = mask[row, 0], mask[row, 1]
                m, n = counts[active[row]]
                results[todo[active[row]]] = self.final_matches(x[row, 0][valid0], x[row, 1][valid1],
                                                                index[row, 0][valid0], index[row, 1][valid1],
                                                                int(m), int(n), i)
            if done.all():
                break
            if prune or done.any():
                left = ~done
                active = active[left]
                mask, x, cos, sin, index = compact(mask[left], x[left], cos[left], sin[left], index[left])
        return results  # type: ignore[return-value]


class OnnxNearestNeighborRunner(MatcherRunner):
    """Mutual nearest neighbours (:mod:`lightmatch.models.nearest_neighbor`) in numpy: no graph needed."""

    SETTINGS = ("ratio_threshold", "distance_threshold")

    def __init__(self, spec: dict, sessions: Optional[Sessions] = None) -> None:
        super().__init__(spec)

    def match(self, feats0: NumpyFeatures, feats1: NumpyFeatures) -> NumpyMatches:
        m, n = len(feats0), len(feats1)
        if m == 0 or n == 0:
            return NumpyMatches(np.full(m, -1, np.int64), np.zeros(m, np.float32))

        def unit(d: np.ndarray) -> np.ndarray:
            d = d.astype(np.float32)
            return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), np.float32(1e-12))

        sim = unit(feats0.descriptors) @ unit(feats1.descriptors).T
        best0, best1 = sim.argmax(1), sim.argmax(0)
        ok = best1[best0] == np.arange(m)
        top0 = sim[np.arange(m), best0]
        d2 = np.clip(2 - 2 * top0, 0, None)
        if self.ratio_threshold is not None:  # Lowe's test in both directions, where a second neighbour exists
            r2 = np.float32(self.ratio_threshold ** 2)
            if n >= 2:
                ok &= d2 <= r2 * np.clip(2 - 2 * np.partition(sim, n - 2, axis=1)[:, n - 2], 0, None)
            if m >= 2:
                ok &= d2 <= r2 * np.clip(2 - 2 * np.partition(sim, m - 2, axis=0)[m - 2], 0, None)[best0]
        if self.distance_threshold is not None:
            ok &= d2 <= self.distance_threshold ** 2
        matches0 = np.where(ok, best0, -1).astype(np.int64)
        return NumpyMatches(matches0, np.where(ok, np.clip((1 + top0) / 2, 0, 1), 0).astype(np.float32))


MATCHER_RUNNERS = {"lightglue": OnnxLightGlueRunner, "nn": OnnxNearestNeighborRunner}


class OnnxPipeline:
    """An export folder's extractor and matcher.

    Args:
        folder: the output of ``lightmatch export onnx``.
        providers: ONNX Runtime execution providers (default: TensorRT, CUDA when present, then CPU).
        threads: CPU threads per graph (default: ONNX Runtime's).
    """

    def __init__(self, folder: str | os.PathLike, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        self.manifest = read_manifest(folder)
        self.sessions = Sessions(folder, providers, threads)
        spec = self.manifest.get("extractor")
        self.extractor = OnnxExtractorRunner(spec, self.sessions) if spec else None
        matcher = self.manifest.get("matcher")
        if matcher is None or matcher["kind"] not in MATCHER_RUNNERS:
            self.matcher = None  # e.g. the COLMAP layout: one graph for COLMAP, not for this runner
        else:
            self.matcher = MATCHER_RUNNERS[matcher["kind"]](matcher, self.sessions)

    @staticmethod
    def read_image(path: str | os.PathLike) -> np.ndarray:
        """An image file as ``(H, W, 3)`` RGB uint8 (OpenCV, EXIF orientation applied)."""
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"{path}: not a readable image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def extract(self, image: np.ndarray) -> NumpyFeatures:
        if self.extractor is None:
            raise ConfigError(f"{self.sessions.folder}: the export has no extractor")
        return self.extractor.extract(image)

    def match(self, feats0: NumpyFeatures, feats1: NumpyFeatures) -> NumpyMatches:
        return self._matcher().match(feats0, feats1)

    def match_many(self, pairs: Sequence[tuple[NumpyFeatures, NumpyFeatures]]) -> list[NumpyMatches]:
        """Several pairs at once (LightGlue: one padded, masked batch; the matches of :meth:`match` pair by
        pair)."""
        return self._matcher().match_many(pairs)

    def _matcher(self) -> MatcherRunner:
        if self.matcher is None:
            raise ConfigError(f"{self.sessions.folder}: the export has no matcher this runner drives "
                              "(a --layout colmap export is for COLMAP)")
        return self.matcher
