"""Matching one image pair end to end: decode, extract, match, write hloc stores, optional plot."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..defaults import VIZ_MAX_MATCHES
from ..errors import OutputError
from ..io import h5
from ..io.images import check_image
from ..io.store import OutputStore
from ..models.base import Extractor, Matcher
from ..types import Features, Matches
from .events import PairEvent
from .loader import LoadedImage, extract_loaded, load_for_extractor
from .rotation import chosen_turn

CORRECT_PX = 3.0
LOCK_WAIT_S = 600.0  # how long a single-pair run waits for another run writing to the same folder


@dataclass
class PairResult:
    """Everything about one matched pair: features, matches, timings (seconds) and warnings."""

    name0: str
    name1: str
    features0: Features
    features1: Features
    matches: Matches
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    num_correct: Optional[int] = None
    rotation: Optional[int] = None  # quarter turns of image 1 kept by the rotation search

    def event(self, layers: Optional[int] = None) -> PairEvent:
        """This pair as a batch pair event (``layers``: how many the matcher has), so that single-pair and batch
        output share their form. A rotation search's pair counts the keypoints it compared
        (:func:`~lightmatch.pipeline.rotation.chosen_turn`)."""
        compared0, compared1, _ = chosen_turn(self.features0, self.features1, self.matches)
        return PairEvent(self.name0, self.name1, "ok", len(compared0), len(compared1),
                         self.matches.num_matches, stop_layer=self.matches.stop_layer or None, layers=layers,
                         correct=self.num_correct,
                         rotation_degrees=None if self.rotation is None else 90 * self.rotation,
                         timings=self.timings, warnings=self.warnings)


def pair_names(path0: str | os.PathLike, path1: str | os.PathLike) -> tuple[str, str]:
    """Image names for the stores: paths relative to the images' common folder, with ``/`` separators."""
    a, b = Path(path0).resolve(), Path(path1).resolve()
    if a == b:
        return a.name, b.name
    root = Path(os.path.commonpath([a.parent, b.parent]))
    return a.relative_to(root).as_posix(), b.relative_to(root).as_posix()


def count_correct(kpts0: np.ndarray, kpts1: np.ndarray, pairs: np.ndarray, H: np.ndarray,
                  threshold: float = CORRECT_PX) -> np.ndarray:
    """``(M,)`` bools: matches whose image-0 keypoint maps within ``threshold`` px of its partner under ``H``."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=bool)
    p0 = np.concatenate([kpts0[pairs[:, 0]], np.ones((len(pairs), 1))], 1) @ H.T
    projected = p0[:, :2] / p0[:, 2:]
    return np.linalg.norm(projected - kpts1[pairs[:, 1]], axis=1) < threshold


def store_attributes(extractor: Extractor, matcher: Optional[Matcher] = None, verify: Any = None,
                     device: Optional[torch.device] = None) -> dict:
    """File attributes recording what produced a store: the extractor, and the matcher, its weights and the
    verification settings (a dataclass such as :class:`~lightmatch.pipeline.batch.VerifyOptions`, or None) when
    matching; each with the device (``device``, default the model's) and the precision run there (``auto``
    resolved). The models' settings are their :meth:`~lightmatch.models.base.Extractor.settings`."""
    device = device or extractor.device
    attrs = {"lightmatch_extractor": extractor.name, "lightmatch_resize": extractor.resize or -1,
             "lightmatch_extractor_settings": extractor.settings(),
             "lightmatch_precision": extractor.run_precision(), "lightmatch_device": device.type}
    if matcher is not None:
        attrs.update({"lightmatch_matcher": matcher.name, "lightmatch_matcher_settings": matcher.settings(),
                      "lightmatch_matcher_weights": matcher.weights_id or "unrecorded",
                      "lightmatch_verify": asdict(verify) if verify is not None else "none",
                      "lightmatch_precision": matcher.run_precision(device), "lightmatch_device": device.type})
    return attrs


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Fail early, with a one-line error, when ``output_dir`` cannot be created or written. Creates nothing: a run
    that fails before its first write leaves no empty folder behind."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: cannot write output here (not a folder)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{out}: cannot write output here ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write output here ({existing} is not writable)")


def check_inputs(paths: list[str | os.PathLike], output_dir: Optional[str | os.PathLike] = None) -> None:
    """Validate images (from their headers: :func:`~lightmatch.io.images.check_image`) and the output folder
    before any model is loaded."""
    for path in paths:
        check_image(path)
    if output_dir is not None:
        check_output_dir(output_dir)


def plot_pair(image0: np.ndarray, image1: np.ndarray, scale0: float, scale1: float, feats0: Features,
              feats1: Features, matches: Matches, path: str | os.PathLike, text: list[str],
              correct: Optional[np.ndarray] = None, title: Optional[str] = None,
              max_lines: Optional[int] = VIZ_MAX_MATCHES, labels: tuple[str, str] = ("correct", "wrong")) -> None:
    """Plot a matched pair on images shrunk by ``scale0`` / ``scale1`` (plot pixels per original pixel);
    ``correct`` is one bool per match of :meth:`Matches.pairs` (named by ``labels`` in the legend)."""
    from ..viz import plot_matches

    k0 = (feats0.keypoints.numpy() + 0.5) * scale0 - 0.5
    k1 = (feats1.keypoints.numpy() + 0.5) * scale1 - 0.5
    plot_matches(image0, image1, k0, k1, matches.pairs(), path, scores=matches.matched_scores(), correct=correct,
                 title=title, text=text, max_lines=max_lines, labels=labels)


def match_pair(path0: str | os.PathLike, path1: str | os.PathLike, extractor: Extractor, matcher: Matcher,
               output_dir: Optional[str | os.PathLike] = None, viz_path: Optional[str | os.PathLike] = None,
               homography: Optional[np.ndarray] = None, overwrite: bool = False,
               wait: float = LOCK_WAIT_S, viz_max_matches: Optional[int] = VIZ_MAX_MATCHES) -> PairResult:
    """Match two image files.

    With ``output_dir``, adds both images' features and the pair's matches to ``output_dir/features.h5`` and
    ``matches.h5`` through the crash-safe :class:`~lightmatch.io.store.OutputStore` (waiting up to ``wait``
    seconds for another run writing there; a store made with other settings is refused unless ``overwrite``).
    Writes a match plot when ``viz_path`` is given, of at most ``viz_max_matches`` lines (None or -1: all).
    With a ground-truth ``homography`` (image 0 -> image 1), counts the matches within 3 px. Models wrapped by
    :func:`~lightmatch.pipeline.rotation.with_rotation_search` report the quarter turn of image 1 they kept.
    """
    name0, name1 = pair_names(path0, path1)
    store = None
    if output_dir is not None:  # opened first: a store made with other settings fails before any work
        store = OutputStore(output_dir, store_attributes(extractor), store_attributes(extractor, matcher),
                            overwrite=overwrite, wait=wait).open()
    try:
        result, loaded = _match_files(path0, path1, name0, name1, extractor, matcher, viz_path is not None)
        if store is not None:
            t = time.perf_counter()
            store.commit(features={name0: result.features0, name1: result.features1},
                         matches={(name0, name1): (result.matches, None)})
            store.finish()
            result.timings["write"] = time.perf_counter() - t
    finally:
        if store is not None:
            store.close()
    correct = None
    if homography is not None:
        correct = count_correct(result.features0.keypoints.numpy(), result.features1.keypoints.numpy(),
                                result.matches.pairs(), homography)
        result.num_correct = int(correct.sum())
    if viz_path is not None:
        text = [f"{extractor.name} + {matcher.name}", f"keypoints {len(result.features0)} / {len(result.features1)}",
                f"matches {result.matches.num_matches}"
                + (f", correct {result.num_correct}" if correct is not None else "")]
        plot_pair(loaded[0].viz, loaded[1].viz, loaded[0].viz_scale, loaded[1].viz_scale, result.features0,
                  result.features1, result.matches, viz_path, text, correct=correct, max_lines=viz_max_matches)
    return result


def _match_files(path0: str | os.PathLike, path1: str | os.PathLike, name0: str, name1: str, extractor: Extractor,
                 matcher: Matcher, keep_viz: bool) -> tuple[PairResult, tuple[LoadedImage, LoadedImage]]:
    """Decode (bounded by the network size), extract and match two files."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    loaded0 = load_for_extractor(path0, str(path0), extractor, keep_viz)
    loaded1 = load_for_extractor(path1, str(path1), extractor, keep_viz)
    timings["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    feats0 = h5.canonical_features(extract_loaded(extractor, loaded0))
    feats1 = h5.canonical_features(extract_loaded(extractor, loaded1))
    timings["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    matches = matcher.match(feats0, feats1).cpu()
    timings["match"] = time.perf_counter() - t
    turns = matches.info.get("turns")
    warnings = [f"{path}: no keypoints found (blank or featureless image)"
                for path, feats in ((path0, feats0), (path1, feats1)) if len(feats) == 0]
    return PairResult(name0, name1, feats0, feats1, matches, timings, warnings, rotation=turns), (loaded0, loaded1)
