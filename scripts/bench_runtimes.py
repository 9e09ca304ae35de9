"""Other runtimes for the extractors' dense networks: OpenVINO and ONNX Runtime against our best torch paths.

For DISK and ALIKED on one image (long side ``--size``, exactly ``--num-keypoints`` keypoints), times:

* torch: the full ``extractor.extract(image)`` in fp32 and bf16, and its dense network alone (DISK: the U-Net on the
  padded image, as ``disk.py`` runs it; ALIKED: ``extractor.dense_maps``);
* ONNX Runtime (CPU execution provider, fp32): the dense network exported with ``torch.onnx.export`` (opset 19;
  ALIKED's deformable convolutions as torchvision's ``deform_conv2d``, i.e. ONNX ``DeformConv``);
* OpenVINO (CPU): the dense network converted with ``openvino.convert_model``, compiled with
  ``INFERENCE_PRECISION_HINT`` f32 and bf16 (OpenVINO's default on a CPU with bf16 units is printed).

A runtime's "full" time is its dense network plus our padding, keypoint detection and description in torch on its
outputs (DISK: kornia's ``heatmap_to_keypoints`` as in ``disk.py``'s bf16 branch; ALIKED: ``ALIKED.detect`` and
``ALIKED.describe``). Each row gives the median times, the speedups over torch at the same precision (torch time /
row time), the largest differences of the dense outputs from torch fp32 (score or heat map; the feature maps), and
the keypoints against torch fp32's ``extract``: the share within 1 px and whether they are identical (same count,
one to one within 1e-3 px). A runtime that cannot export, convert or run a network gets a row with the error.

    python scripts/bench_runtimes.py --size 1024 --threads 2 --repeat 5 --json runtimes.json
    python scripts/bench_runtimes.py --size 480 --repeat 1 --warmup 0   # a quick check

Needs ``pip install openvino onnxruntime onnx onnxscript``; a runtime whose packages are missing is skipped.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F
from kornia.feature.disk.detector import heatmap_to_keypoints
from torch import nn

import lightmatch as lm
from lightmatch.export.graphs import conv_block, res_block
from lightmatch.models.aliked import ALIKED, DIVISOR, DenseMaps
from lightmatch.models.base import Extractor, resize_for_network
from lightmatch.models.disk import PAD_MULTIPLE

if TYPE_CHECKING:
    import openvino as ov

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/data/lightglue_bench/sacre_coeur1.jpg"
PRECISIONS = ("fp32", "bf16")
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino",)}

Outputs = tuple[torch.Tensor, ...]
DenseFn = Callable[[torch.Tensor], Outputs]
Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Row:
    """One measured path: times in ms (medians), speedups over torch at the same precision, agreement with fp32."""

    extractor: str
    runtime: str
    precision: str
    dense_ms: Optional[float] = None
    full_ms: Optional[float] = None
    dense_speedup: Optional[float] = None
    full_speedup: Optional[float] = None
    score_diff: Optional[float] = None
    feature_diff: Optional[float] = None
    keypoints: Optional[int] = None
    within_1px: Optional[float] = None
    identical: Optional[bool] = None
    dense_times_ms: list[float] = field(default_factory=list)
    full_times_ms: list[float] = field(default_factory=list)
    error: Optional[str] = None


# ---------------------------------------------------------------------- the extractors' dense parts
class AlikedDense(nn.Module):
    """What ``ALIKED.dense_maps`` computes, from the padded image, in ops that export (torchvision's deformable
    convolution, batch norms as modules). Returns the score map ``(1, 1, H, W)`` cropped to the image at ``crop``
    ``(top, left, height, width)``, then :class:`DenseMaps`' ``full`` and ``levels`` channels-last, as
    ``(1, H', W', C)`` (the layout our sparse descriptor head reads)."""

    def __init__(self, extractor: ALIKED, crop: tuple[int, int, int, int]) -> None:
        super().__init__()
        net = extractor.net
        self.net = net
        self.crop = crop
        channels = [net.conv1.out_channels, net.conv2.out_channels, net.conv3.out_channels, net.conv4.out_channels]
        for i, part in enumerate(net.score_head[0].weight.split(channels, dim=1)):  # the head's 1x1 per input map
            self.register_buffer(f"head_part{i}", part.detach().clone())

    def forward(self, x: torch.Tensor) -> Outputs:
        net = self.net
        x1 = conv_block(x, net.block1)
        x2 = res_block(F.avg_pool2d(x1, 2), net.block2)
        x3 = res_block(F.avg_pool2d(x2, 4), net.block3)
        x4 = res_block(F.avg_pool2d(x3, 4), net.block4)
        levels = [torch.selu(conv(level)) for conv, level in zip((net.conv2, net.conv3, net.conv4), (x2, x3, x4))]
        score = F.conv2d(torch.selu(net.conv1(x1)), self.head_part0)
        for level, weight in zip(levels, (self.head_part1, self.head_part2, self.head_part3)):
            score = score + F.interpolate(F.conv2d(level, weight), size=x1.shape[-2:], mode="bilinear",
                                          align_corners=True)
        for layer in net.score_head[1:]:
            score = layer(score)
        top, left, height, width = self.crop
        score = torch.sigmoid(score)[..., top:top + height, left:left + width]
        return (score, *(t.permute(0, 2, 3, 1) for t in (x1, *levels)))


class Subject:
    """One extractor under test: its network input, its dense network (torch, and exportable), and the steps after
    the dense part (detection and description), shared by every runtime."""

    def __init__(self, name: str, extractors: dict[str, Extractor], image: torch.Tensor) -> None:
        self.name = name
        self.extractors = extractors
        self.image = image
        self.height, self.width = image.shape[-2:]

    def network_input(self) -> torch.Tensor:
        """The padded ``(1, 3, H', W')`` image the dense network sees."""
        raise NotImplementedError

    def dense_module(self) -> nn.Module:
        """The fp32 dense network as a module from :meth:`network_input` to the dense outputs, for export."""
        raise NotImplementedError

    def torch_dense(self, precision: str) -> Outputs:
        """The dense outputs as our torch path computes them at ``precision``."""
        raise NotImplementedError

    def finish(self, outputs: Outputs) -> Detections:
        """Keypoints ``(N, 2)`` in pixels, scores and descriptors from fp32 dense outputs."""
        raise NotImplementedError

    def split(self, outputs: Outputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The score (or heat) map and the feature maps of the dense outputs, cropped to the image, fp32."""
        raise NotImplementedError


class DiskSubject(Subject):
    """DISK: the U-Net on the image zero-padded at the bottom and right to multiples of 16."""

    def network_input(self) -> torch.Tensor:
        return F.pad(self.image[None], (0, (-self.width) % PAD_MULTIPLE, 0, (-self.height) % PAD_MULTIPLE))

    def dense_module(self) -> nn.Module:
        return self.extractors["fp32"].net.unet

    def torch_dense(self, precision: str) -> Outputs:
        extractor = self.extractors[precision]
        x = self.network_input()
        if extractor.compute_dtype is not None:
            x = x.to(extractor.compute_dtype).contiguous(memory_format=torch.channels_last)
        return (extractor.net.unet(x),)

    def finish(self, outputs: Outputs) -> Detections:
        extractor = self.extractors["fp32"]
        out, dim = outputs[0], extractor.net.desc_dim
        heatmap = out[:, dim:, :self.height, :self.width].contiguous()
        keypoints = heatmap_to_keypoints(heatmap, n=extractor.max_keypoints, window_size=extractor.nms_window,
                                         score_threshold=extractor.detection_threshold)[0]
        x, y = keypoints.xys.T
        descriptors = F.normalize(out[0, :dim, y, x].T, dim=-1)
        return keypoints.xys.float(), keypoints.detection_logp, descriptors

    def split(self, outputs: Outputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = outputs[0][..., :self.height, :self.width].float()
        dim = self.extractors["fp32"].net.desc_dim
        return out[:, dim:], [out[:, :dim]]


class AlikedSubject(Subject):
    """ALIKED: backbone and score head on the image replicate-padded (centred) to multiples of 32."""

    def __init__(self, name: str, extractors: dict[str, Extractor], image: torch.Tensor) -> None:
        super().__init__(name, extractors, image)
        pad_h, pad_w = (-self.height) % DIVISOR, (-self.width) % DIVISOR
        self.left, self.top = pad_w // 2, pad_h // 2
        self.padding = [self.left, pad_w - self.left, self.top, pad_h - self.top]

    def network_input(self) -> torch.Tensor:
        return F.pad(self.image[None], self.padding, mode="replicate")

    def dense_module(self) -> nn.Module:
        return AlikedDense(self.extractors["fp32"], (self.top, self.left, self.height, self.width))

    def torch_dense(self, precision: str) -> Outputs:
        extractor = self.extractors[precision]
        with extractor.autocast():
            maps = extractor.dense_maps(self.image[None])
        return (maps.score_map, *(t.permute(0, 2, 3, 1) for t in (maps.full, *maps.levels)))

    def finish(self, outputs: Outputs) -> Detections:
        extractor = self.extractors["fp32"]
        score_map, full, *levels = (outputs[0], *(t.permute(0, 3, 1, 2) for t in outputs[1:]))
        maps = DenseMaps(score_map, full, extractor.net.conv1.weight.flatten(1), tuple(levels), (self.left, self.top))
        keypoints, scores = extractor.detect(score_map)
        descriptors = extractor.describe(maps, keypoints)
        wh = torch.tensor([self.width - 1, self.height - 1], dtype=keypoints.dtype)
        return wh * (keypoints + 1) / 2.0, scores, descriptors

    def split(self, outputs: Outputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return outputs[0].float(), [t.float() for t in outputs[1:]]


# ---------------------------------------------------------------------- the runtimes
def onnxruntime_dense(module: nn.Module, example: torch.Tensor, threads: int, workdir: Path) -> DenseFn:
    """``module`` exported to ONNX (opset 19) and run in ONNX Runtime's CPU execution provider."""
    import onnxruntime as ort

    path = workdir / "dense.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), opset_version=19, dynamo=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: tuple(torch.from_numpy(out) for out in session.run(None, {name: x.numpy()}))


def openvino_convert(module: nn.Module, example: torch.Tensor) -> ov.Model:
    """``module`` converted to an OpenVINO model with the example's (static) input shape."""
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ov.convert_model(module, example_input=example, input=[tuple(example.shape)])


def openvino_dense(model: ov.Model, precision: str, threads: int) -> DenseFn:
    """An OpenVINO model compiled for the CPU at ``precision``; outputs are views of OpenVINO's buffers, valid
    until the next call."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision],
                                                      "INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run(x: torch.Tensor) -> Outputs:
        request.infer({0: x.numpy()}, share_inputs=True, share_outputs=True)
        return tuple(torch.from_numpy(request.get_output_tensor(i).data) for i in range(count))

    return run


def openvino_default_precision() -> str:
    """OpenVINO's default ``INFERENCE_PRECISION_HINT`` on this CPU."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


# ---------------------------------------------------------------------- measuring
def timed_ms(fn: Callable[[], object], warmup: int, repeat: int) -> tuple[list[float], object]:
    """``fn`` run ``warmup`` times, then ``repeat`` timed times: the times in ms and the last result."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times, out


def agreement(keypoints: torch.Tensor, reference: torch.Tensor) -> tuple[float, bool]:
    """The share of ``keypoints`` within 1 px of a reference keypoint, and whether they are the reference's (same
    count, one to one within 1e-3 px, in any order)."""
    if len(keypoints) == 0 or len(reference) == 0:
        return float(len(keypoints) == len(reference)), len(keypoints) == len(reference)
    dist = torch.cdist(keypoints.double(), reference.double(), compute_mode="donot_use_mm_for_euclid_dist")
    nearest, index = dist.min(1)
    identical = (len(keypoints) == len(reference) and len(set(index.tolist())) == len(keypoints)
                 and bool(nearest.max() < 1e-3))
    return float((nearest < 1.0).double().mean()), identical


def compare(row: Row, subject: Subject, outputs: Outputs, reference: Outputs,
            keypoints: torch.Tensor, reference_keypoints: torch.Tensor) -> None:
    """Fill ``row``'s differences from torch fp32: dense outputs and keypoints."""
    score, features = subject.split(outputs)
    ref_score, ref_features = subject.split(reference)
    row.score_diff = float((score - ref_score).abs().max())
    row.feature_diff = max(float((a - b).abs().max()) for a, b in zip(features, ref_features))
    row.keypoints = len(keypoints)
    row.within_1px, row.identical = agreement(keypoints, reference_keypoints)


def bench_subject(subject: Subject, runtimes: list[str], threads: int, warmup: int, repeat: int) -> list[Row]:
    """All rows of one extractor: torch fp32 and bf16 first, then each runtime's dense network."""
    rows: list[Row] = []
    with torch.inference_mode():
        reference = subject.torch_dense("fp32")
        reference_keypoints = subject.extractors["fp32"].extract(subject.image).keypoints
        for precision in PRECISIONS:
            row = Row(subject.name, "torch", precision)
            extractor = subject.extractors[precision]
            row.dense_times_ms, dense = timed_ms(lambda: subject.torch_dense(precision), warmup, repeat)
            row.full_times_ms, feats = timed_ms(lambda: extractor.extract(subject.image), warmup, repeat)
            compare(row, subject, dense, reference, feats.keypoints, reference_keypoints)
            rows.append(row)

    candidates: list[tuple[str, str, Callable[[], DenseFn]]] = []
    with tempfile.TemporaryDirectory() as workdir, torch.no_grad():
        module, example = subject.dense_module(), subject.network_input().clone()
        if "onnxruntime" in runtimes:
            candidates.append(("onnxruntime", "fp32",
                               lambda: onnxruntime_dense(module, example, threads, Path(workdir))))
        if "openvino" in runtimes:
            converted = functools.cache(lambda: openvino_convert(module, example))  # once for both precisions
            candidates += [("openvino", p, lambda p=p: openvino_dense(converted(), p, threads)) for p in PRECISIONS]
        for runtime, precision, build in candidates:
            row = Row(subject.name, runtime, precision)
            try:
                dense_fn = build()
                with torch.inference_mode():
                    row.dense_times_ms, dense = timed_ms(lambda: dense_fn(subject.network_input()), warmup, repeat)
                    compare_dense = tuple(t.clone() for t in dense)  # runtime buffers are reused by the next call
                    row.full_times_ms, (keypoints, _, _) = timed_ms(
                        lambda: subject.finish(dense_fn(subject.network_input())), warmup, repeat)
                    compare(row, subject, compare_dense, reference, keypoints, reference_keypoints)
            except Exception as exc:  # a failed export, conversion or run is a result: record it
                row.error = f"{type(exc).__name__}: {exc}"
            rows.append(row)

    torch_ms = {row.precision: row for row in rows if row.runtime == "torch"}
    for row in rows:
        if row.error is None:
            row.dense_ms = statistics.median(row.dense_times_ms)
            row.full_ms = statistics.median(row.full_times_ms)
            base = torch_ms[row.precision]
            row.dense_speedup = statistics.median(base.dense_times_ms) / row.dense_ms
            row.full_speedup = statistics.median(base.full_times_ms) / row.full_ms
    return rows


# ---------------------------------------------------------------------- output
def format_rows(rows: list[Row]) -> str:
    """The table, then the errors of failed rows in full."""
    header = (f"{'extractor':9} {'runtime':11} {'prec':4} {'dense ms':>9} {'full ms':>9} {'x dense':>7} "
              f"{'x full':>7} {'max|d| score':>12} {'max|d| feat':>11} {'kpts':>5} {'<1px':>7} identical")
    lines = [header, "-" * len(header)]
    errors = []
    for row in rows:
        if row.error is not None:
            errors.append(f"{row.extractor} {row.runtime} {row.precision}: {row.error}")
            lines.append(f"{row.extractor:9} {row.runtime:11} {row.precision:4} FAILED (see below)")
            continue
        lines.append(f"{row.extractor:9} {row.runtime:11} {row.precision:4} {row.dense_ms:9.1f} {row.full_ms:9.1f} "
                     f"{row.dense_speedup:7.2f} {row.full_speedup:7.2f} {row.score_diff:12.2e} "
                     f"{row.feature_diff:11.2e} {row.keypoints:5d} {row.within_1px:7.1%} {row.identical}")
    return "\n".join(lines + errors)


def available_runtimes() -> list[str]:
    """The runtimes whose packages import; one line for each that is skipped."""
    found = []
    for runtime, packages in PACKAGES.items():
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            print(f"{runtime}: skipped, {', '.join(missing)} not installed "
                  f"(pip install openvino onnxruntime onnx onnxscript)")
        else:
            found.append(runtime)
    return found


def versions(runtimes: list[str]) -> dict[str, str]:
    """Versions of torch and of the runtimes' packages."""
    names = ["torch", "torchvision", "kornia"] + [p for r in runtimes for p in PACKAGES[r]]
    return {name: importlib.metadata.version(name) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=1024, help="long side of the image the extractors see")
    parser.add_argument("--num-keypoints", type=int, default=2048, help="keypoints per image (exact count)")
    parser.add_argument("--threads", type=int, default=2, help="threads of torch and of each runtime")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--extractors", default="disk,aliked", help="comma-separated: disk, aliked")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and settings here")
    args = parser.parse_args()
    names = [name.strip() for name in args.extractors.split(",") if name.strip()]
    unknown = set(names) - {"disk", "aliked"}
    if unknown:
        parser.error(f"unknown extractors: {', '.join(sorted(unknown))} (choose disk, aliked)")
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup at least 0")

    torch.set_num_threads(args.threads)
    runtimes = available_runtimes()
    image, _ = resize_for_network(lm.load_image(args.image), args.size)
    settings = {"image": str(args.image), "image_wh": [image.shape[-1], image.shape[-2]],
                "num_keypoints": args.num_keypoints,
                "threads": args.threads, "repeat": args.repeat, "warmup": args.warmup,
                "versions": versions(runtimes)}
    if "openvino" in runtimes:
        settings["openvino_default_precision"] = openvino_default_precision()
    print(" ".join(f"{k} {v}" for k, v in settings["versions"].items()))
    print(f"image {args.image.name} at {image.shape[-1]}x{image.shape[-2]}, {args.num_keypoints} keypoints, "
          f"{args.threads} threads, median of {args.repeat} after {args.warmup} warm-up"
          + (f"; OpenVINO's default CPU precision here: {settings['openvino_default_precision']}"
             if "openvino" in runtimes else ""), flush=True)

    subjects = {"disk": DiskSubject, "aliked": AlikedSubject}
    rows: list[Row] = []
    for name in names:
        extractors = {}
        for precision in PRECISIONS:
            extractor = lm.load_extractor(name, resize=args.size, device="cpu", precision=precision)
            extractors[precision] = extractor.with_keypoint_budget(args.num_keypoints)[0]
        rows += bench_subject(subjects[name](name, extractors, image), runtimes, args.threads, args.warmup,
                              args.repeat)
    print("x dense / x full: torch's time at the same precision over the row's; full for a runtime = its dense "
          "network + our padding, detection and description in torch; differences and keypoints against torch fp32")
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "rows": [asdict(row) for row in rows]}, indent=1))


if __name__ == "__main__":
    main()
