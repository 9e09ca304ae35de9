"""Homography evaluation of an extractor and a matcher (glue-factory's HPatches protocol).

:func:`evaluate_homography` runs on an HPatches root (``i_*``/``v_*`` sequences, pairs ``1 -> k``), on a pairs file
or folder written by :func:`~lightmatch.eval.homography_data.make_synthetic_pairs`, or makes such a synthetic set
from a folder of images first. As glue-factory's ``eval/hpatches.py``:

* each image is resized so that its short side is ``resize`` px (480; kornia's antialiased bilinear resize, the
  other side ``int()``-truncated) and the ground truth is rescaled to the resized images;
* features are extracted on the resized image (the extractor's own resizing is switched off for the run);
* per pair: corner error of a robust homography (OpenCV RANSAC, 0.5 px, by default; ``estimator`` picks another)
  and of a DLT fit on all matches, precision (symmetric reprojection error < 3 px) and recall (of ground-truth
  matchable keypoints);
* summary: AUC of the corner errors at 1/3/5 px for RANSAC and DLT, mean precision and recall, mean keypoints
  and matches (:func:`~lightmatch.eval.metrics.homography_summary`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import kornia
import numpy as np

from ..errors import ConfigError, InputError
from ..estimators import check_estimator
from ..io.images import image_to_tensor, read_image
from ..io.pairs import list_images
from ..models.base import Extractor, Matcher
from ..pipeline.rotation import chosen_degrees, chosen_turn
from ..types import Features, Matches
from .homography_data import (
    HomographyPair,
    hpatches_resize,
    load_homography_pairs,
    make_synthetic_pairs,
    rescale_homography,
)
from .metrics import (
    HOMOGRAPHY_CORRECT_THRESHOLD,
    HomographyResult,
    evaluate_homography_pair,
    homography_summary,
    matched_keypoints,
    symmetric_homography_error,
)
from .report import EvalReport, ProgressCallback, finite, write_report

GLUEFACTORY_RESIZE = 480


class HomographyEvalReport(EvalReport):
    """What :func:`evaluate_homography` returns.

    Attributes:
        summary: :func:`homography_summary` (percent) plus ``mean_keypoints``, ``mean_matches``, ``mean_inliers``.
        pairs: one JSON-ready record per pair (corner errors in pixels, ``null`` where estimation failed).
        settings: how the evaluation ran. files: paths written.
    """


TABLE_COLUMNS = [("RANSAC@1px", "auc_ransac@1px"), ("RANSAC@3px", "auc_ransac@3px"), ("RANSAC@5px", "auc_ransac@5px"),
                 ("DLT@1px", "auc_dlt@1px"), ("DLT@3px", "auc_dlt@3px"), ("DLT@5px", "auc_dlt@5px"),
                 ("Prec@3px", "precision"), ("Rec@3px", "recall"), ("Kpts", "mean_keypoints"),
                 ("Matches", "mean_matches")]


def format_homography_table(summary: dict[str, Any]) -> str:
    """The summary in the layout of :func:`~lightmatch.eval.pose.format_pose_table`: a title, a header of AUCs
    (RANSAC and DLT, percent), precision and recall at 3 px (percent), mean keypoints and matches, and values."""
    return ("Homography Results (mean over {} pairs):\n".format(summary["num_pairs"])
            + "".join(f"{name}\t " for name, _ in TABLE_COLUMNS).rstrip(" ") + "\n"
            + "".join(f"{summary[key]:.2f}\t " for _, key in TABLE_COLUMNS).rstrip(" "))


def image_files_in(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    images = [folder / name for name in list_images(folder, recursive=False)]
    if not images:
        raise InputError(f"{folder}: no images (jpg, png, ...) in folder")
    return images


def _load_resized(path: Path, resize: Optional[int], side: str, upsample: bool = True):
    """``(C, H', W')`` float image resized as glue-factory's preprocessing (not enlarged unless ``upsample``),
    original and new ``(W, H)``."""
    array = read_image(path)
    h, w = array.shape[:2]
    w_new, h_new = hpatches_resize(w, h, resize, side)
    if not upsample and w_new * h_new > w * h:
        w_new, h_new = w, h
    image = image_to_tensor(array)
    if (w_new, h_new) != (w, h):
        image = kornia.geometry.transform.resize(image[None], (h_new, w_new), antialias=True)[0]
    return image, (w, h), (w_new, h_new)


def evaluate_homography(
    extractor: Extractor,
    matcher: Matcher,
    dataset: Optional[str | os.PathLike] = None,
    synthetic_images: Optional[str | os.PathLike] = None,
    num_pairs: int = 20,
    output_dir: Optional[str | os.PathLike] = None,
    resize: Optional[int] = GLUEFACTORY_RESIZE,
    side: str = "short",
    estimator: str = "opencv",
    ransac_thresh: float = 0.5,
    seed: int = 0,
    skip_large: bool = True,
    synthetic_size: Sequence[int] = (640, 480),
    viz: bool = False,
    upsample: bool = True,
    progress: Optional[ProgressCallback] = None,
) -> HomographyEvalReport:
    """Evaluate homography estimation from matches.

    Args:
        extractor, matcher: the models. The extractor's own resizing is switched off during the run.
        dataset: an HPatches root, a synthetic set's folder (holding ``pairs.txt``) or a pairs file.
        synthetic_images: instead of ``dataset``: a folder of images to make ``num_pairs`` synthetic pairs from;
            they are written to ``output_dir/synthetic`` (pass that folder as ``dataset`` to evaluate them again).
        resize: short-side length of the images given to the extractor (``None``: original size); see ``side``.
            An image smaller than that keeps its size unless ``upsample`` (True: glue-factory's protocol).
        estimator, ransac_thresh: robust estimator (``opencv``, ``magsac``, ``poselib`` or ``colmap``;
            :func:`~lightmatch.estimators.estimate_homography`) and its threshold in pixels.
        seed: seeds the synthetic set and ``cv2.setRNGSeed`` before every robust estimate.
        skip_large: leave out the large HPatches scenes, as glue-factory does.
        viz: write match plots (green: symmetric error < 3 px) into ``output_dir/viz``.
        progress: ``progress(done, total)`` after each pair.
    """
    if (dataset is None) == (synthetic_images is None):
        raise ConfigError("give either a dataset folder (HPatches layout or pairs.txt) or --synthetic IMAGE_DIR")
    if (synthetic_images is not None or viz) and output_dir is None:
        raise ConfigError("--synthetic and --viz need an output folder (-o OUTDIR)")
    if resize is not None and resize <= 0:
        raise ConfigError(f"resize must be positive (or -1 for none), got {resize}")
    estimator = check_estimator(estimator)
    out = Path(output_dir) if output_dir is not None else None
    settings: dict[str, Any] = {"protocol": "gluefactory-hpatches", "resize": resize, "side": side,
                                "upsample": upsample,
                                "estimator": estimator, "ransac_thresh": ransac_thresh, "seed": seed,
                                "correct_thresh": HOMOGRAPHY_CORRECT_THRESHOLD,
                                "extractor": extractor.name, "matcher": matcher.name}
    if synthetic_images is not None:
        if num_pairs < 1:
            raise ConfigError(f"--num-pairs must be positive, got {num_pairs}")
        sources = image_files_in(synthetic_images)
        pairs = make_synthetic_pairs(sources, num_pairs, out / "synthetic", seed=seed, size=synthetic_size)
        settings.update({"dataset": str(out / "synthetic"), "synthetic_from": str(synthetic_images),
                         "num_synthetic_pairs": num_pairs})
    else:
        pairs = load_homography_pairs(dataset, skip_large=skip_large)
        settings["dataset"] = str(dataset)

    uses = Counter([str(p.path0) for p in pairs] + [str(p.path1) for p in pairs])
    extractor = extractor.with_settings(resize=None)  # images arrive resized to the evaluation size
    cache: dict[str, tuple[Features, tuple[int, int], tuple[int, int], Optional[np.ndarray]]] = {}

    def image(path: Path, timings: dict[str, float]):
        key = str(path)
        if key not in cache:
            t = time.perf_counter()
            tensor, size, new_size = _load_resized(path, resize, side, upsample)
            t1 = time.perf_counter()
            feats = extractor.extract(tensor).to("cpu")
            timings["decode"] = timings.get("decode", 0.0) + t1 - t
            timings["extract"] = timings.get("extract", 0.0) + time.perf_counter() - t1
            shown = None
            if viz:
                shown = (np.round(tensor.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8))
                shown = shown[..., 0] if shown.shape[-1] == 1 else shown
            cache[key] = (feats, size, new_size, shown)
        return cache[key]

    def release(path: Path) -> None:
        uses[str(path)] -= 1
        if uses[str(path)] <= 0:
            cache.pop(str(path), None)

    records: list[dict[str, Any]] = []
    results: list[HomographyResult] = []
    for i, pair in enumerate(pairs):
        timings: dict[str, float] = {}
        f0, size0, new0, shown0 = image(pair.path0, timings)
        f1, size1, new1, shown1 = image(pair.path1, timings)
        t = time.perf_counter()
        matches: Matches = matcher.match(f0, f1)
        timings["match"] = time.perf_counter() - t
        degrees = chosen_degrees(matches)
        f0, f1, matches = chosen_turn(f0, f1, matches)  # a rotation search's: the turn it kept
        m0 = matches.matches0.cpu().numpy()
        H = rescale_homography(pair.H_0to1, (new0[0] / size0[0], new0[1] / size0[1]),
                               (new1[0] / size1[0], new1[1] / size1[1]))
        k0, k1 = f0.keypoints.numpy(), f1.keypoints.numpy()
        result = evaluate_homography_pair(k0, k1, m0, H, new0, estimator=estimator, ransac_thresh=ransac_thresh,
                                          seed=seed)
        results.append(result)
        records.append(finite({
            "image0": pair.name0, "image1": pair.name1, "scene": pair.scene,
            "error_ransac": result.error_ransac, "error_dlt": result.error_dlt,
            "precision": result.precision, "recall": result.recall,
            "num_keypoints0": len(f0), "num_keypoints1": len(f1), "num_matches": result.num_matches,
            "num_correct": result.num_correct, "num_matchable": result.num_matchable,
            "num_inliers": result.num_inliers, "stop_layer": matches.stop_layer,
            **({} if degrees is None else {"rotation_degrees": degrees}),
            "timings_ms": {k: round(v * 1000, 2) for k, v in timings.items()}}))
        if viz:
            from ..viz import plot_matches

            index_pairs = matches.pairs()
            mk0, mk1 = matched_keypoints(k0, k1, m0)
            correct = np.nan_to_num(symmetric_homography_error(mk0, mk1, H), nan=np.inf) \
                < HOMOGRAPHY_CORRECT_THRESHOLD
            name = f"{pair.name0}_{pair.name1}".replace("/", "-").replace(".", "-") + ".png"
            plot_matches(shown0, shown1, k0, k1, index_pairs, out / "viz" / name, correct=correct,
                         text=[f"{extractor.name} + {matcher.name}", f"Keypoints: {len(f0)}:{len(f1)}",
                               f"Matches: {result.num_matches} (correct {result.num_correct})",
                               f"Corner error: RANSAC {result.error_ransac:.2f} px, DLT {result.error_dlt:.2f} px"])
        release(pair.path0)
        release(pair.path1)
        if progress is not None:
            progress(i + 1, len(pairs))

    summary: dict[str, Any] = homography_summary(results)
    summary["mean_keypoints"] = float(np.mean([(r["num_keypoints0"] + r["num_keypoints1"]) / 2 for r in records]))
    summary["mean_matches"] = float(np.mean([r.num_matches for r in results]))
    summary["mean_inliers"] = float(np.mean([r.num_inliers for r in results]))
    report = HomographyEvalReport(summary, records, settings)
    if synthetic_images is not None:
        report.files["synthetic"] = str(out / "synthetic")
    if viz:
        report.files["viz"] = str(out / "viz")
    if out is not None:
        report.files.update(write_report(report, out))
    return report


__all__ = ["HomographyEvalReport", "HomographyPair", "evaluate_homography", "format_homography_table"]
