"""Relative-pose evaluation of an extractor and a matcher on a pairs file with ground truth (SuperGlue's protocol).

:func:`evaluate_pose` reproduces ``match_pairs.py --eval`` of SuperGluePretrainedNetwork:

* each image is decoded (EXIF orientation applied; grayscale extractors decode straight to grayscale as
  ``cv2.imread(path, IMREAD_GRAYSCALE)`` does), resized with ``cv2.resize`` to the size of
  :func:`~lightmatch.eval.pose_data.resize_for_eval` (SuperGlue's default ``640 480``; ``-1`` keeps the size), then
  rotated by ``np.rot90(image, rot)`` with the ``rot0``/``rot1`` fields of the pairs file;
* features are extracted on that image (the extractor's own resizing is switched off for the run), so keypoints
  are in the pixels of the resized, rotated image, and the intrinsics and pose are adapted to it
  (:func:`~lightmatch.eval.pose_data.adapt_pair_to_images`);
* each pair is scored by :func:`~lightmatch.eval.metrics.evaluate_pose_pair` (RANSAC seeded with ``seed`` before
  every pair, so a pair's result does not depend on the others) and the pairs are summarised by
  :func:`~lightmatch.eval.metrics.relative_pose_summary`.

Each image is decoded and extracted once, however many pairs it appears in. Instead of extracting and matching,
the features and matches of an earlier run can be read from hloc stores (``features_h5`` / ``matches_h5``); their
keypoints are in original-image pixels and are mapped into the evaluation frame first.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..estimators import check_estimator
from ..io import h5
from ..io.images import image_to_tensor, read_image
from ..models.base import Extractor, Matcher
from ..pipeline.rotation import chosen_degrees, chosen_turn, rotate_keypoints
from ..types import Features, Matches
from .metrics import EPIPOLAR_CORRECT_THRESHOLD, PoseResult, evaluate_pose_pair, relative_pose_summary
from .pose_data import PosePair, adapt_pair_to_images, read_pose_pairs, resize_for_eval
from .report import EvalReport, ProgressCallback, finite, write_report

SUPERGLUE_RESIZE = (640, 480)
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


# --------------------------------------------------------------------------------------------------------------------
# Images and keypoints in the evaluation frame
# --------------------------------------------------------------------------------------------------------------------


def decode_image(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """Decode an image as :func:`~lightmatch.io.images.read_image` does, or, with ``grayscale``, straight to one
    8-bit channel as ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)`` (SuperGlue's reader). -> ``(H, W[, 3])``."""
    if not grayscale:
        return read_image(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    except (OSError, cv2.error):
        image = None
    if image is None:
        return read_image(path)  # raises the InputError that explains what is wrong with the file
    return image


def unrotate_keypoints(kpts: np.ndarray, size: Sequence[int], rot: int) -> np.ndarray:
    """Inverse of :func:`rotate_keypoints`: ``size`` is ``(W, H)`` of the image *before* rotation."""
    rot = int(rot) % 4
    rotated_size = (size[1], size[0]) if rot % 2 else (size[0], size[1])
    return rotate_keypoints(kpts, rotated_size, (4 - rot) % 4)


def original_to_eval(kpts: np.ndarray, size: Sequence[int], resize: Sequence[int], rot: int,
                     upsample: bool = True) -> np.ndarray:
    """Keypoints in original-image pixels (``size = (W, H)``) -> pixels of the resized, rotated evaluation image.

    Resizing follows the hloc convention ``(k + 0.5) * scale - 0.5``. -> ``(N, 2)`` float64.
    """
    w, h = int(size[0]), int(size[1])
    w_new, h_new = resize_for_eval(w, h, resize, upsample)
    scale = np.array([w_new / w, h_new / h])
    k = (np.asarray(kpts, dtype=np.float64).reshape(-1, 2) + 0.5) * scale - 0.5
    return rotate_keypoints(k, (w_new, h_new), rot)


def eval_to_original(kpts: np.ndarray, size: Sequence[int], resize: Sequence[int], rot: int,
                     upsample: bool = True) -> np.ndarray:
    """Inverse of :func:`original_to_eval`. -> ``(N, 2)`` float64 original-image pixels."""
    w, h = int(size[0]), int(size[1])
    w_new, h_new = resize_for_eval(w, h, resize, upsample)
    k = unrotate_keypoints(kpts, (w_new, h_new), rot)
    return (k + 0.5) * np.array([w / w_new, h / h_new]) - 0.5


def load_eval_image(path: str | os.PathLike, resize: Sequence[int], rot: int, grayscale: bool = False,
                    interpolation: str = "linear", upsample: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """SuperGlue's ``read_image``: decode, ``cv2.resize`` to :func:`resize_for_eval`'s size, ``np.rot90``.

    ``interpolation`` is ``"linear"`` (``cv2.resize``'s default, what SuperGlue uses) or ``"area"``.
    Returns the evaluation image ``(H', W'[, 3])`` (uint8 or uint16) and the original ``(W, H)``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{interpolation}': choose {', '.join(INTERPOLATIONS)}")
    image = decode_image(path, grayscale)
    h, w = image.shape[:2]
    w_new, h_new = resize_for_eval(w, h, resize, upsample)
    if (w_new, h_new) != (w, h):
        image = cv2.resize(image, (w_new, h_new), interpolation=INTERPOLATIONS[interpolation])
    if rot % 4:
        image = np.ascontiguousarray(np.rot90(image, k=int(rot)))
    return image, (int(w), int(h))


def _image_size(path: Path) -> tuple[int, int]:
    image = read_image(path)
    return int(image.shape[1]), int(image.shape[0])


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


class PoseEvalReport(EvalReport):
    """What :func:`evaluate_pose` returns.

    Attributes:
        summary: :func:`relative_pose_summary` (percent) plus ``num_failed`` (pairs without a pose),
            ``mean_keypoints``, ``mean_matches``, ``mean_inliers``.
        pairs: one JSON-ready record per pair (pose errors in degrees, ``null`` where no pose was estimated).
        settings: how the evaluation ran (resize, seed, models, sources).
        files: paths written (``results``, ``summary``, ``features``, ``matches``, ``viz``).
    """


def format_pose_table(summary: dict[str, Any]) -> str:
    """SuperGlue's final table (``match_pairs.py --eval``), tabs included::

        Evaluation Results (mean over 15 pairs):
        AUC@5	 AUC@10	 AUC@20	 Prec	 MScore
        16.25	 33.12	 51.43	 85.58	 19.74
    """
    values = [summary["auc@5"], summary["auc@10"], summary["auc@20"], summary["precision"],
              summary["matching_score"]]
    return ("Evaluation Results (mean over {} pairs):\n".format(summary["num_pairs"])
            + "AUC@5\t AUC@10\t AUC@20\t Prec\t MScore\t\n"
            + "{:.2f}\t {:.2f}\t {:.2f}\t {:.2f}\t {:.2f}\t".format(*values))


def _pair_record(pair: PosePair, result: PoseResult, num_keypoints1: int, matches: Optional[Matches],
                 timings: dict[str, float]) -> dict[str, Any]:
    record = {
        "image0": pair.name0,
        "image1": pair.name1,
        "pose_error": result.pose_error,
        "error_R": result.error_R,
        "error_t": result.error_t,
        "precision": result.precision,
        "matching_score": result.matching_score,
        "num_correct": result.num_correct,
        "num_matches": result.num_matches,
        "num_keypoints0": result.num_keypoints0,
        "num_keypoints1": num_keypoints1,
        "num_inliers": result.num_inliers,
    }
    if matches is not None:
        record["stop_layer"] = matches.stop_layer
        if chosen_degrees(matches) is not None:
            record["rotation_degrees"] = chosen_degrees(matches)
    if timings:
        record["timings_ms"] = {k: round(v * 1000, 2) for k, v in timings.items()}
    return finite(record)


# --------------------------------------------------------------------------------------------------------------------
# Sources of features and matches
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _EvalImage:
    features: Features  # keypoints in the evaluation frame
    size: tuple[int, int]  # (W, H) of the original image
    image: Optional[np.ndarray] = None  # the evaluation image, kept for plots


class _ModelSource:
    """Extracts each (image, rotation) once, while a later pair still needs it, and matches pairs."""

    def __init__(self, image_dir: Path, extractor: Extractor, matcher: Matcher, resize: Sequence[int],
                 interpolation: str, keep_images: bool, uses: Counter, upsample: bool = True) -> None:
        self.image_dir, self.extractor, self.matcher = image_dir, extractor, matcher
        self.resize, self.interpolation, self.keep_images = resize, interpolation, keep_images
        self.upsample = upsample
        self.uses = uses
        self.cache: dict[tuple[str, int], _EvalImage] = {}

    def image(self, name: str, rot: int, timings: dict[str, float]) -> _EvalImage:
        key = (name, rot)
        if key not in self.cache:
            t = time.perf_counter()
            array, size = load_eval_image(self.image_dir / name, self.resize, rot, self.extractor.grayscale,
                                          self.interpolation, self.upsample)
            t1 = time.perf_counter()
            feats = self.extractor.extract(image_to_tensor(array)).to("cpu")
            timings["decode"] = timings.get("decode", 0.0) + t1 - t
            timings["extract"] = timings.get("extract", 0.0) + time.perf_counter() - t1
            self.cache[key] = _EvalImage(feats, size, array if self.keep_images else None)
        return self.cache[key]

    def release(self, name: str, rot: int) -> None:
        key = (name, rot)
        self.uses[key] -= 1
        if self.uses[key] <= 0:
            self.cache.pop(key, None)

    def pair(self, pair: PosePair) -> tuple[_EvalImage, _EvalImage, Matches, dict[str, float]]:
        timings: dict[str, float] = {}
        im0 = self.image(pair.name0, pair.rot0, timings)
        im1 = self.image(pair.name1, pair.rot1, timings)
        t = time.perf_counter()
        matches = self.matcher.match(im0.features, im1.features)
        matches = matches.cpu()
        timings["match"] = time.perf_counter() - t
        return im0, im1, matches, timings


class _StoreSource:
    """Reads features and matches of an earlier run and maps keypoints into the evaluation frame."""

    def __init__(self, image_dir: Path, features_h5: Path, matches_h5: Path, resize: Sequence[int],
                 interpolation: str, keep_images: bool, upsample: bool = True) -> None:
        self.image_dir, self.features_h5, self.matches_h5 = image_dir, features_h5, matches_h5
        self.resize, self.interpolation, self.keep_images = resize, interpolation, keep_images
        self.upsample = upsample

    def image(self, name: str, rot: int) -> _EvalImage:
        feats = h5.read_features(self.features_h5, name)
        size = tuple(int(s) for s in feats.image_size)
        if size[0] <= 0 or size[1] <= 0:
            size = _image_size(self.image_dir / name)
        kpts = original_to_eval(feats.keypoints.numpy(), size, self.resize, rot, self.upsample)
        w_new, h_new = resize_for_eval(size[0], size[1], self.resize, self.upsample)
        eval_size = (h_new, w_new) if rot % 2 else (w_new, h_new)
        feats = Features(torch.from_numpy(kpts.astype(np.float32)), feats.scores, feats.descriptors, eval_size,
                         feats.scales, feats.oris)
        array = None
        if self.keep_images:
            array, _ = load_eval_image(self.image_dir / name, self.resize, rot, False, self.interpolation,
                                       self.upsample)
        return _EvalImage(feats, (size[0], size[1]), array)

    def release(self, name: str, rot: int) -> None:
        pass

    def pair(self, pair: PosePair) -> tuple[_EvalImage, _EvalImage, Matches, dict[str, float]]:
        im0, im1 = self.image(pair.name0, pair.rot0), self.image(pair.name1, pair.rot1)
        index_pairs, scores = h5.read_matches(self.matches_h5, pair.name0, pair.name1)
        n0, n1 = len(im0.features), len(im1.features)
        if len(index_pairs) and (index_pairs[:, 0].max() >= n0 or index_pairs[:, 1].max() >= n1):
            raise InputError(f"{self.matches_h5}: matches of ({pair.name0}, {pair.name1}) index keypoints that "
                             f"{self.features_h5} does not have (were both written by the same run?)")
        m0 = np.full(n0, -1, dtype=np.int64)
        s0 = np.zeros(n0, dtype=np.float32)
        m0[index_pairs[:, 0]] = index_pairs[:, 1]
        s0[index_pairs[:, 0]] = scores
        return im0, im1, Matches(torch.from_numpy(m0), torch.from_numpy(s0)), {}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def _viz_text(name: str, result: PoseResult, n1: int) -> list[str]:
    return [name,
            f"Keypoints: {result.num_keypoints0}:{n1}",
            f"Matches: {result.num_matches} (correct {result.num_correct})",
            f"Rotation error: {result.error_R:.1f} deg, translation error: {result.error_t:.1f} deg",
            f"Precision: {100 * result.precision:.1f}%, inliers: {result.num_inliers}"]


def evaluate_pose(
    pairs_file: str | os.PathLike | Sequence[PosePair],
    image_dir: str | os.PathLike,
    extractor: Optional[Extractor] = None,
    matcher: Optional[Matcher] = None,
    resize: Sequence[int] = SUPERGLUE_RESIZE,
    seed: Optional[int] = 0,
    ransac_thresh: float = 1.0,
    estimator: str = "opencv",
    output_dir: Optional[str | os.PathLike] = None,
    viz: bool = False,
    features_h5: Optional[str | os.PathLike] = None,
    matches_h5: Optional[str | os.PathLike] = None,
    interpolation: str = "linear",
    progress: Optional[ProgressCallback] = None,
    overwrite: bool = False,
    upsample: bool = True,
) -> PoseEvalReport:
    """Evaluate relative pose on a SuperGlue pairs file (see the module docstring for the protocol).

    Args:
        pairs_file: ``name0 name1 rot0 rot1 K0 K1 T_0to1`` lines (:func:`~lightmatch.eval.pose_data.read_pose_pairs`),
            or the pairs themselves (e.g. from :func:`~lightmatch.eval.colmap_model.pairs_from_colmap_model`).
        image_dir: folder the image names are relative to.
        extractor, matcher: the models (not needed with ``features_h5``/``matches_h5``). The extractor's own
            resizing is switched off during the run: the images are resized here, as SuperGlue does.
        resize: ``[W, H]``, ``[max_dim]`` or ``[-1]`` (:func:`~lightmatch.eval.pose_data.resize_for_eval`);
            not ``upsample``: an image smaller than ``[max_dim]`` keeps its size (SuperGlue enlarges it).
        seed: seed of the robust estimation of every pair (``opencv``: ``cv2.setRNGSeed(seed)`` first; ``None``:
            OpenCV's state as it is).
        ransac_thresh: inlier threshold in pixels of the evaluation images (SuperGlue: 1).
        estimator: ``opencv`` (SuperGlue's protocol), ``magsac``, ``poselib`` or ``colmap``
            (:func:`~lightmatch.estimators.estimate_relative_pose`).
        output_dir: when given, writes ``results.jsonl``, ``summary.json`` and (when matching) ``features.h5`` /
            ``matches.h5`` with keypoints in original-image pixels, which ``features_h5``/``matches_h5`` accept
            (through :class:`~lightmatch.io.store.OutputStore`: stores made with other settings are refused
            unless ``overwrite``).
        viz: write one plot per pair into ``output_dir/viz``, matches green when their epipolar error is below
            5e-4 and red otherwise (needs ``output_dir``).
        features_h5, matches_h5: evaluate these hloc stores (keypoints in original-image pixels) instead of
            extracting and matching; both or neither.
        interpolation: ``"linear"`` (SuperGlue's ``cv2.resize`` default) or ``"area"``.
        progress: ``progress(done, total)`` after each pair.
    Returns:
        A :class:`PoseEvalReport`.
    """
    image_dir = Path(image_dir)
    resize = [int(r) for r in resize]
    estimator = check_estimator(estimator)
    from_stores = features_h5 is not None or matches_h5 is not None
    if from_stores and (features_h5 is None or matches_h5 is None):
        raise ConfigError("give both --features-h5 and --matches-h5, or neither")
    if not from_stores and (extractor is None or matcher is None):
        raise ConfigError("an extractor and a matcher are needed unless features and matches are read from stores")
    if viz and output_dir is None:
        raise ConfigError("--viz needs an output folder (-o OUTDIR)")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation '{interpolation}': choose {', '.join(INTERPOLATIONS)}")
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: not a folder")
    resize_for_eval(2, 2, resize)  # validates the resize option before any work
    from_file = isinstance(pairs_file, (str, os.PathLike))
    pairs = read_pose_pairs(pairs_file) if from_file else list(pairs_file)
    out = Path(output_dir) if output_dir is not None else None

    settings: dict[str, Any] = {"protocol": "superglue-relative-pose",
                                "pairs_file": str(pairs_file) if from_file else None, "image_dir": str(image_dir),
                                "resize": resize, "upsample": upsample, "interpolation": interpolation,
                                "seed": seed, "estimator": estimator,
                                "ransac_thresh": ransac_thresh, "epipolar_threshold": EPIPOLAR_CORRECT_THRESHOLD}
    if from_stores:
        settings.update({"features_h5": str(features_h5), "matches_h5": str(matches_h5)})
        source: Any = _StoreSource(image_dir, Path(features_h5), Path(matches_h5), resize, interpolation, viz,
                                   upsample)
    else:
        from ..pipeline.match import store_attributes

        attrs = store_attributes(extractor, matcher)
        attrs["lightmatch_resize"] = -1  # extraction runs on the evaluation image, resized here
        settings.update({"extractor": extractor.name, "matcher": matcher.name, "store_attributes": attrs})
        uses = Counter([(p.name0, p.rot0) for p in pairs] + [(p.name1, p.rot1) for p in pairs])
        extractor = extractor.with_settings(resize=None)  # images arrive resized to the evaluation size
        source = _ModelSource(image_dir, extractor, matcher, resize, interpolation, viz, uses, upsample)

    records: list[dict[str, Any]] = []
    results: list[PoseResult] = []
    files: dict[str, str] = {}
    write_stores = out is not None and not from_stores
    store_attrs = {**settings.get("store_attributes", {}), "lightmatch_eval_resize": resize,
                   "lightmatch_keypoint_frame": "original-image pixels"}
    store = None
    if write_stores:
        from ..io.store import OutputStore

        match_attrs = {**store_attrs, "lightmatch_verify": "none"}
        store = OutputStore(out, store_attrs, match_attrs, overwrite=overwrite)
    with store if store is not None else contextlib.nullcontext():
        for i, pair in enumerate(pairs):
            im0, im1, matches, timings = source.pair(pair)
            # a rotation search's pair: the keypoints of the turn it kept (the stores keep every turn)
            f0, f1, compared = chosen_turn(im0.features, im1.features, matches)
            k0, k1 = f0.keypoints.numpy(), f1.keypoints.numpy()
            K0, K1, T_0to1 = adapt_pair_to_images(pair, im0.size, im1.size, resize, upsample)
            result = evaluate_pose_pair(k0, k1, compared.matches0.numpy(), K0, K1, T_0to1, ransac_thresh,
                                        seed=seed, estimator=estimator)
            results.append(result)
            records.append(_pair_record(pair, result, len(f1), None if from_stores else compared, timings))
            if store is not None:
                features = {name: _original_features(im, resize, rot, upsample)
                            for name, rot, im in ((pair.name0, pair.rot0, im0), (pair.name1, pair.rot1, im1))}
                store.commit(features=features, matches={(pair.name0, pair.name1): (matches, None)})
            if viz:
                from ..viz import plot_matches

                index_pairs = compared.pairs()
                stem = f"{Path(pair.name0).stem}_{Path(pair.name1).stem}_evaluation.png"
                title = "stores" if from_stores else f"{extractor.name} + {matcher.name}"
                plot_matches(im0.image, im1.image, k0, k1, index_pairs, out / "viz" / stem,
                             correct=result.epipolar_errors < EPIPOLAR_CORRECT_THRESHOLD,
                             text=_viz_text(title, result, len(f1)))
            source.release(pair.name0, pair.rot0)
            source.release(pair.name1, pair.rot1)
            if progress is not None:
                progress(i + 1, len(pairs))
    if write_stores:
        files.update({"features": str(out / "features.h5"), "matches": str(out / "matches.h5")})
    if viz:
        files["viz"] = str(out / "viz")

    summary: dict[str, Any] = relative_pose_summary(results)
    summary["num_failed"] = sum(1 for r in results if not math.isfinite(r.pose_error))
    summary["mean_keypoints"] = float(np.mean([(r["num_keypoints0"] + r["num_keypoints1"]) / 2 for r in records]))
    summary["mean_matches"] = float(np.mean([r.num_matches for r in results]))
    summary["mean_inliers"] = float(np.mean([r.num_inliers for r in results]))
    report = PoseEvalReport(summary, records, settings, files)
    if out is not None:
        report.files.update(write_report(report, out))
    return report


def _original_features(im: "_EvalImage", resize: Sequence[int], rot: int, upsample: bool = True) -> Features:
    """Features of an evaluation image with keypoints (and SIFT scales) back in original-image pixels."""
    kpts = eval_to_original(im.features.keypoints.numpy(), im.size, resize, rot, upsample)
    scales = im.features.scales
    if scales is not None:
        w_new, h_new = resize_for_eval(im.size[0], im.size[1], resize, upsample)
        scales = scales * float((im.size[0] / w_new + im.size[1] / h_new) / 2)
    return Features(torch.from_numpy(kpts.astype(np.float32)), im.features.scores, im.features.descriptors,
                    im.size, scales, im.features.oris)
