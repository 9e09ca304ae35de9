"""Matching one image pair end to end: decode, extract, match, write hloc stores, optional plot."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError, OutputError
from ..io import h5
from ..io.images import image_to_tensor, read_image
from ..models.base import Extractor, Matcher
from ..types import Features, Matches

CORRECT_PX = 3.0


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

    def summary(self) -> dict:
        """A JSON-serialisable summary."""
        out = {
            "image0": self.name0,
            "image1": self.name1,
            "keypoints0": len(self.features0),
            "keypoints1": len(self.features1),
            "matches": self.matches.num_matches,
            "stop_layer": self.matches.stop_layer,
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }
        if self.num_correct is not None:
            out["correct"] = self.num_correct
        if self.rotation is not None:
            out["rotation_degrees"] = 90 * self.rotation
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def pair_names(path0: str | os.PathLike, path1: str | os.PathLike) -> tuple[str, str]:
    """Image names for the stores: paths relative to the images' common folder, with ``/`` separators."""
    a, b = Path(path0).resolve(), Path(path1).resolve()
    if a == b:
        return a.name, b.name
    root = Path(os.path.commonpath([a.parent, b.parent]))
    return a.relative_to(root).as_posix(), b.relative_to(root).as_posix()


def read_homography(path: str | os.PathLike) -> np.ndarray:
    """A 3x3 homography from a text file (9 numbers)."""
    try:
        values = np.loadtxt(path, dtype=np.float64).reshape(-1)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read a homography ({exc})") from exc
    if values.size != 9:
        raise InputError(f"{path}: a homography needs 9 numbers, found {values.size}")
    return values.reshape(3, 3)


def count_correct(kpts0: np.ndarray, kpts1: np.ndarray, pairs: np.ndarray, H: np.ndarray,
                  threshold: float = CORRECT_PX) -> np.ndarray:
    """``(M,)`` bools: matches whose image-0 keypoint maps within ``threshold`` px of its partner under ``H``."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=bool)
    p0 = np.concatenate([kpts0[pairs[:, 0]], np.ones((len(pairs), 1))], 1) @ H.T
    projected = p0[:, :2] / p0[:, 2:]
    return np.linalg.norm(projected - kpts1[pairs[:, 1]], axis=1) < threshold


def store_attributes(extractor: Extractor, matcher: Optional[Matcher] = None) -> dict:
    """File attributes recording what produced a store."""
    attrs = {"lightmatch_extractor": extractor.name, "lightmatch_resize": extractor.resize or -1,
             "lightmatch_extractor_settings": _settings(extractor)}
    if matcher is not None:
        attrs.update({"lightmatch_matcher": matcher.name, "lightmatch_matcher_settings": _settings(matcher)})
    return attrs


def _settings(model) -> dict:
    keys = ("max_keypoints", "detection_threshold", "nms", "nms_radius", "depth_confidence", "width_confidence",
            "filter_threshold", "ratio_threshold", "distance_threshold", "sinkhorn_iterations", "match_threshold")
    return {k: getattr(model, k) for k in keys if isinstance(getattr(model, k, None), (int, float, str))}


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Fail early, with a one-line error, when ``output_dir`` cannot be created or written."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".lightmatch-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out}: cannot write output here ({exc.strerror or exc})") from exc


def check_inputs(paths: list[str | os.PathLike], output_dir: Optional[str | os.PathLike] = None) -> None:
    """Validate images (decodable, large enough) and the output folder before any model is loaded."""
    for path in paths:
        read_image(path)
    if output_dir is not None:
        check_output_dir(output_dir)


def match_pair(path0: str | os.PathLike, path1: str | os.PathLike, extractor: Extractor, matcher: Matcher,
               output_dir: Optional[str | os.PathLike] = None, viz_path: Optional[str | os.PathLike] = None,
               homography: Optional[np.ndarray] = None, rotation_search: bool = False) -> PairResult:
    """Match two image files.

    Writes ``output_dir/features.h5`` and ``output_dir/matches.h5`` (hloc layout, added to existing stores
    atomically) when ``output_dir`` is given, and a match plot when ``viz_path`` is given. With a ground-truth
    ``homography`` (image 0 -> image 1), counts the matches within 3 px. ``rotation_search``: match image 1 at
    0/90/180/270 degrees and keep the rotation with most verified inliers
    (:func:`~lightmatch.pipeline.rotation.match_with_rotation_search`).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    array0, array1 = read_image(path0), read_image(path1)
    timings["decode"] = time.perf_counter() - t
    if rotation_search:
        from .rotation import match_with_rotation_search

        found = match_with_rotation_search(image_to_tensor(array0), image_to_tensor(array1), extractor, matcher)
        feats0, feats1, matches = found.features0, found.features1, found.matches
        timings.update(found.timings)
    else:
        t = time.perf_counter()
        feats0 = extractor.extract(image_to_tensor(array0)).to("cpu")
        feats1 = extractor.extract(image_to_tensor(array1)).to("cpu")
        timings["extract"] = time.perf_counter() - t
        t = time.perf_counter()
        matches = matcher.match(feats0, feats1)
        matches = Matches(matches.matches0.cpu(), matches.scores0.cpu(), matches.stop_layer, matches.info)
        timings["match"] = time.perf_counter() - t
    name0, name1 = pair_names(path0, path1)
    warnings = [f"{path}: no keypoints found (blank or featureless image)"
                for path, feats in ((path0, feats0), (path1, feats1)) if len(feats) == 0]
    result = PairResult(name0, name1, feats0, feats1, matches, timings, warnings,
                        rotation=found.turns if rotation_search else None)
    pairs = matches.pairs()
    correct = None
    if homography is not None:
        correct = count_correct(feats0.keypoints.numpy(), feats1.keypoints.numpy(), pairs, homography)
        result.num_correct = int(correct.sum())
    if output_dir is not None:
        t = time.perf_counter()
        out = Path(output_dir)
        h5.write_features(out / "features.h5", {name0: feats0, name1: feats1}, store_attributes(extractor))
        h5.write_matches(out / "matches.h5", {(name0, name1): matches}, store_attributes(extractor, matcher))
        timings["write"] = time.perf_counter() - t
    if viz_path is not None:
        from ..viz import plot_matches

        text = [f"{extractor.name} + {matcher.name}", f"keypoints {len(feats0)} / {len(feats1)}",
                f"matches {len(pairs)}" + (f", correct {result.num_correct}" if correct is not None else "")]
        plot_matches(array0, array1, feats0.keypoints.numpy(), feats1.keypoints.numpy(), pairs, viz_path,
                     scores=matches.matched_scores(), correct=correct, text=text)
    return result
