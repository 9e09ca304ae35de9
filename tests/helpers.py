"""Test helpers shared by the test modules (no test module imports another): image makers, CLI runners, store
comparison and the store invariant, checkpoints in the official key layouts."""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from lightmatch.io import h5

LIGHTMATCH = Path(sys.executable).parent / "lightmatch"
ASSETS = Path(__file__).resolve().parents[1] / "assets"


# ------------------------------------------------------------------------------------------------- images ---

def make_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (256, 192), step: int = 10,
                prefix: str = "img") -> list[str]:
    """``n`` overlapping crops (shifted by ``step`` px each) of one random texture as PNGs; returns their names."""
    rng = np.random.default_rng(seed)
    w, h = size
    texture = cv2.GaussianBlur(rng.integers(0, 256, (h + 40, w + step * n, 3), dtype=np.uint8), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{prefix}{i:02d}.png"
        cv2.imwrite(str(folder / name), texture[20:20 + h, step * i:step * i + w])
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------------- CLI ---

def run(*args, check_code: int | None = 0, cwd: Path | None = None, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed console script with ``args`` (each one argument); assert its exit code unless None."""
    proc = subprocess.run([str(LIGHTMATCH), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          input=stdin, timeout=timeout)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stderr
    return proc


def invoke(*args, check_code: int | None = 0, cwd: Path | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    """``lightmatch ARGS`` (each one argument) in this process, through click's test runner: the exit code, stdout
    and stderr the console script would give, without a Python start, a torch import and a model load per call.
    Asserts the exit code unless ``check_code`` is None. Tests whose point is a process boundary (signals, pipes,
    the installed script's exit code) use :func:`run`."""
    from click.testing import CliRunner

    from lightmatch.cli import main

    threads = torch.get_num_threads()  # `benchmark --threads` sets it for the process
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    torch.set_num_threads(threads)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # not through the command group's error handling: a bug of the test or of click
    proc = subprocess.CompletedProcess(["lightmatch", *map(str, args)], result.exit_code, result.stdout,
                                       result.stderr)
    if check_code is not None:
        assert proc.returncode == check_code, proc.stderr
    return proc


def run_line(args: str, cwd: Path, stdin: str | None = None, shell: bool = False) -> subprocess.CompletedProcess:
    """A command line: ``lightmatch ARGS`` split like a shell and run in this process (:func:`invoke`), or ``args``
    through a real shell (pipes between processes)."""
    if not shell:
        return invoke(*shlex.split(args), check_code=None, cwd=cwd, stdin=stdin)
    return subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True, shell=True, timeout=120)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A failed run whose stderr is one ``lightmatch: error:`` line holding every fragment."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lightmatch: error:") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -------------------------------------------------------------------------------------------------- stores ---

def store_contents(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by path, plus the file attributes."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        if h5.INDEX_GROUP in handle:  # a sharded store's top file: its items, read through their external links
            items = h5.feature_groups(handle) if "shard" in handle[h5.INDEX_GROUP] else h5.match_groups(handle)
            for item in items:
                for key, obj in handle[item].items():
                    out[f"{item}/{key}"] = obj[()]
        else:
            handle.visititems(lambda key, obj: out.__setitem__(key, obj[()]) if isinstance(obj, h5py.Dataset)
                              else None)
        out["@attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()
                         if k != "lightmatch_layout"}
    return out


def assert_same_stores(a: Path, b: Path) -> None:
    """``a/features.h5`` and ``a/matches.h5`` equal ``b``'s, dataset by dataset (values and dtypes)."""
    for name in ("features.h5", "matches.h5"):
        ca, cb = store_contents(a / name), store_contents(b / name)
        assert ca.keys() == cb.keys(), name
        for key in ca:
            if key == "@attrs":
                assert ca[key] == cb[key]
            else:
                assert ca[key].dtype == cb[key].dtype and np.array_equal(ca[key], cb[key]), f"{name}:{key}"


def _groups_with(handle: h5py.Group, dataset: str) -> list[str]:
    if h5.INDEX_GROUP in handle:  # a sharded store's top file
        return h5.feature_groups(handle) if dataset == "keypoints" else h5.match_groups(handle)
    found: list[str] = []
    handle.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Group) and dataset in obj else None)
    return found


def assert_store_invariant(folder: Path) -> None:
    """The store rules of :mod:`lightmatch.io.store` in ``folder``: every pair in ``matches.h5`` has both images in
    ``features.h5`` (hloc's pair key, either order), every match index is in range, names are clean relative
    paths (``..`` only leading, for images of another folder), and a finished run leaves no part, temporary or lock
    file."""
    folder = Path(folder)
    features, matches = folder / "features.h5", folder / "matches.h5"
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"left behind in {folder}: {leftovers}"
    if not matches.exists():
        return
    assert features.exists(), "matches.h5 without features.h5"
    with h5py.File(features, "r") as fh:
        names = _groups_with(fh, "keypoints")
        sizes = {n: len(fh[n]["keypoints"]) for n in names}
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")[n.split("/").count(".."):]], names
    by_key = {n.replace("/", "-"): n for n in names}
    with h5py.File(matches, "r") as mh:
        for key in _groups_with(mh, "matches0"):
            first, second = key.split("/")
            assert first in by_key and second in by_key, f"pair {key} lacks features of an image"
            m0 = mh[key]["matches0"][()]
            assert len(m0) == sizes[by_key[first]], key
            assert m0.max(initial=-1) < sizes[by_key[second]] and m0.min(initial=0) >= -1, key


# --------------------------------------------------------------------------------------- official layouts ---

OFFICIAL_SUPERPOINT = {
    "conv1a.weight": (64, 1, 3, 3), "conv1a.bias": (64,),
    "conv1b.weight": (64, 64, 3, 3), "conv1b.bias": (64,),
    "conv2a.weight": (64, 64, 3, 3), "conv2a.bias": (64,),
    "conv2b.weight": (64, 64, 3, 3), "conv2b.bias": (64,),
    "conv3a.weight": (128, 64, 3, 3), "conv3a.bias": (128,),
    "conv3b.weight": (128, 128, 3, 3), "conv3b.bias": (128,),
    "conv4a.weight": (128, 128, 3, 3), "conv4a.bias": (128,),
    "conv4b.weight": (128, 128, 3, 3), "conv4b.bias": (128,),
    "convPa.weight": (256, 128, 3, 3), "convPa.bias": (256,),
    "convPb.weight": (65, 256, 1, 1), "convPb.bias": (65,),
    "convDa.weight": (256, 128, 3, 3), "convDa.bias": (256,),
    "convDb.weight": (256, 256, 1, 1), "convDb.bias": (256,),
}


def superpoint_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in OFFICIAL_SUPERPOINT.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        state[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return state


def official_superglue_layout(with_bn_counters: bool = True) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of Magic Leap's superglue_{indoor,outdoor}.pth: keypoint encoder MLP 3-32-64-128-256-256
    (conv/bn/relu at indices 0,1,2, 3,4,5, ...), 18 GNN layers (4-head attention: merge + 3 projections, MLP
    512-512-256), final projection, scalar bin score."""
    layout: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, cin: int, cout: int) -> None:
        layout[f"{prefix}.weight"] = (cout, cin, 1)
        layout[f"{prefix}.bias"] = (cout,)

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (c,)
        if with_bn_counters:
            layout[f"{prefix}.num_batches_tracked"] = ()

    channels = [3, 32, 64, 128, 256, 256]
    for i in range(len(channels) - 1):
        conv(f"kenc.encoder.{3 * i}", channels[i], channels[i + 1])
        if i < len(channels) - 2:
            bn(f"kenc.encoder.{3 * i + 1}", channels[i + 1])
    for n in range(18):
        conv(f"gnn.layers.{n}.attn.merge", 256, 256)
        for p in range(3):
            conv(f"gnn.layers.{n}.attn.proj.{p}", 256, 256)
        conv(f"gnn.layers.{n}.mlp.0", 512, 512)
        bn(f"gnn.layers.{n}.mlp.1", 512)
        conv(f"gnn.layers.{n}.mlp.3", 512, 256)
    conv("final_proj", 256, 256)
    layout["bin_score"] = ()
    return layout


def superglue_checkpoint(with_bn_counters: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random checkpoint in the official layout (a fresh dict each call; tensors shared, never modified)."""
    return dict(_superglue_checkpoint(with_bn_counters, seed))


@functools.lru_cache(maxsize=None)
def _superglue_checkpoint(with_bn_counters: bool, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_superglue_layout(with_bn_counters).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


def register_as_official(monkeypatch, name: str, path: Path) -> None:
    """Let ``path`` pass as the official file of registry entry ``name``: its git blob id becomes the expected
    one (the real Magic Leap files cannot be shipped, so tests build their own in the official layout)."""
    import dataclasses

    from lightmatch import weights

    spec = dataclasses.replace(weights.REGISTRY[name], git_sha1=weights.git_blob_sha1(path))
    monkeypatch.setitem(weights.REGISTRY, name, spec)


def store_differences(a: Path, b: Path) -> tuple[float, float]:
    """How far the stores of folders ``a`` and ``b`` (the same images and pairs) differ: the largest keypoint
    difference in pixels over images with as many keypoints in both (an image whose keypoint count differs counts
    as ``inf``), and the share of identical matches (matches of both over matches of either, all pairs
    together)."""
    fa, fb = store_contents(a / "features.h5"), store_contents(b / "features.h5")
    assert fa.keys() == fb.keys()
    worst = 0.0
    for key in (k for k in fa if k.endswith("/keypoints")):
        same_shape = fa[key].shape == fb[key].shape
        worst = max(worst, float(np.abs(fa[key] - fb[key]).max(initial=0.0)) if same_shape else float("inf"))
    ma, mb = store_contents(a / "matches.h5"), store_contents(b / "matches.h5")
    assert ma.keys() == mb.keys()
    both = either = 0
    for key in (k for k in ma if k.endswith("/matches0")):
        pa = {(i, j) for i, j in enumerate(ma[key].tolist()) if j >= 0}
        pb = {(i, j) for i, j in enumerate(mb[key].tolist()) if j >= 0}
        both, either = both + len(pa & pb), either + len(pa | pb)
    return worst, both / max(either, 1)
