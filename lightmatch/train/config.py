"""A training run's settings and the checks made before any work starts (nothing heavy is imported: the CLI reports
what it is about to do within a fraction of a second).

Every setting has a declared type and range (:data:`INT_LIMITS`, :data:`FLOAT_LIMITS`, :data:`PATCH_LIMITS`); a bad
value, from the command line or a ``--config`` file, is a :class:`~lightmatch.errors.ConfigError` (a usage error)
naming the option and what it accepts.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import precision as amp
from ..errors import ConfigError, InputError
from ..io.lock import FolderLock

# Extractors a matcher can be trained on: the feature families with a LightGlue configuration (the official
# weights' input size; aliked-n16rot and aliked-n32 are 128-d ALIKED too) and XFeat's LighterGlue. aliked-t16
# (64-d descriptors) has no LightGlue configuration to start from.
TRAINABLE = ("aliked", "aliked-n16", "aliked-n16rot", "aliked-n32", "disk", "superpoint", "sift", "xfeat")
OFFICIAL_DEPTH = {"lightglue": 9, "superglue": 9, "lighterglue": 6}

# Inclusive ranges of the integer settings.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "steps": (1, 10_000_000), "batch_size": (1, 512), "n_layers": (1, 32), "num_keypoints": (16, 8192),
    "val_every": (1, 10_000_000), "val_pairs": (0, 10_000), "checkpoint_every": (1, 10_000_000),
    "log_every": (1, 10_000_000), "seed": (0, 2 ** 32 - 1),
}
# Float settings: (low, high, low excluded).
FLOAT_LIMITS: dict[str, tuple[float, float, bool]] = {
    "epochs": (0.0, 10_000.0, True), "lr": (0.0, 1.0, True), "val_fraction": (0.0, 0.5, True),
    "grad_clip": (0.0, 1e6, False),
}
PATCH_LIMITS = (64, 2048, 8)  # each side of --patch-size: min, max, multiple (SuperPoint's 8-pixel cells)
# One batch's ground truth and assignment are (pairs x keypoints^2): bounded so that a typo cannot ask for
# terabytes. glue-factory's recipe (128 pairs of 512 keypoints) is 2^25.
MAX_BATCH_CELLS = 2 ** 28
TRAIN_PRECISIONS = ("fp32", "fp16", "bf16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def option(name: str) -> str:
    """The command-line option of setting ``name``."""
    return {"checkpointing": "--gradient-checkpointing", "output": "-o/--output",
            "images": "--images"}.get(name, "--" + name.replace("_", "-"))


@dataclass
class TrainConfig:
    """Every setting of a run (saved as ``config.json``; ``--config`` reads the same keys)."""

    matcher: str = "lightglue"
    features: str = "aliked"
    images: list[str] = field(default_factory=list)
    output: str = "run"
    steps: Optional[int] = None
    epochs: Optional[float] = None
    batch_size: int = 4
    lr: float = 1e-4
    init: str = "scratch"  # scratch | official | PATH
    n_layers: Optional[int] = None  # default: the official depth (9; LighterGlue 6)
    num_keypoints: int = 512
    val_every: int = 100
    val_pairs: int = 16
    val_fraction: float = 0.1
    checkpoint_every: int = 100
    device: str = "auto"
    precision: str = "fp32"  # TRAIN_PRECISIONS (autocast; fp16 with a GradScaler)
    seed: int = 0
    grad_clip: float = 1.0
    checkpointing: bool = False  # gradient checkpointing of the matcher's layers
    cache: Optional[str] = None
    patch_size: tuple[int, int] = (640, 480)
    log_every: int = 10
    weights: Optional[str] = None  # the extractor's weights (default: the registry's)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)} (--config)")
        values = dict(values)
        if isinstance(values.get("patch_size"), (list, tuple)):
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)

    def check(self) -> None:
        """Every setting's type and range, and the combinations that cannot work; raises :class:`ConfigError`
        naming the option. Reads nothing but the existence of the files named by ``init`` and ``weights``."""
        for name, (low, high) in INT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in ("steps", "n_layers"):
                continue
            if not _is_int(value) or not low <= value <= high:
                raise ConfigError(f"{option(name)} must be an integer in [{low}, {high}]; got {value!r}")
        for name, (low, high, open_low) in FLOAT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name == "epochs":
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and (value > low if open_low else value >= low) and value <= high
            if not ok:
                bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
                raise ConfigError(f"{option(name)} must be a finite number in {bounds}; got {value!r}")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of --steps and --epochs")
        if self.batch_size * self.num_keypoints ** 2 > MAX_BATCH_CELLS:
            raise ConfigError(f"--batch-size {self.batch_size} with --num-keypoints {self.num_keypoints}: a batch "
                              f"would hold {self.batch_size * self.num_keypoints ** 2:.2e} ground-truth cells, more "
                              f"than the {MAX_BATCH_CELLS:.2e} allowed (pairs x keypoints^2); lower one of them")
        self._check_choices()
        self._check_patch()
        self._check_paths()

    def _check_choices(self) -> None:
        if self.matcher not in ("lightglue", "superglue"):
            raise ConfigError(f"--matcher {self.matcher!r}: choose lightglue or superglue")
        if self.features not in TRAINABLE:
            raise ConfigError(f"--features {self.features!r}: matchers train on {', '.join(TRAINABLE)} "
                              "(the extractors with a LightGlue configuration)")
        if self.matcher == "superglue" and self.features != "superpoint":
            raise ConfigError("--matcher superglue is trained on SuperPoint features: use --features superpoint "
                              "(and --weights FILE for SuperPoint's weights if they are not installed)")
        amp.check(self.precision, TRAIN_PRECISIONS, "--precision")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"--device {self.device!r}: choose auto, cpu, mps, cuda or cuda:N")
        if self.precision == "fp16" and self.device in ("cpu", "mps"):
            raise ConfigError(f"--precision fp16 needs CUDA (GradScaler); use fp32 or bf16 on --device {self.device}")
        if not isinstance(self.checkpointing, bool):
            raise ConfigError(f"--gradient-checkpointing must be true or false; got {self.checkpointing!r}")
        if not isinstance(self.images, list) or not all(isinstance(p, str) for p in self.images):
            raise ConfigError("--images must be a list of folders")
        if not self.images:
            raise ConfigError("give at least one image folder (--images DIR)")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError("-o/--output must name the run folder")

    def _check_patch(self) -> None:
        low, high, multiple = PATCH_LIMITS
        size = self.patch_size
        ok = isinstance(size, tuple) and len(size) == 2 and all(_is_int(v) and low <= v <= high and v % multiple == 0
                                                                  for v in size)
        if not ok:
            raise ConfigError(f"--patch-size must be WxH with each side a multiple of {multiple} in [{low}, {high}] "
                              f"(e.g. 640x480); got {format_patch(size)}")

    def _check_paths(self) -> None:
        if not isinstance(self.init, str) or not (self.init in ("scratch", "official") or Path(self.init).is_file()):
            raise ConfigError(f"--init {self.init!r}: choose scratch, official or an existing weights file")
        if self.init == "official" and self.n_layers is not None:
            kind = "lighterglue" if self.features == "xfeat" and self.matcher == "lightglue" else self.matcher
            if self.n_layers != OFFICIAL_DEPTH[kind]:
                raise ConfigError(f"--n-layers {self.n_layers} with --init official: the official weights have "
                                  f"{OFFICIAL_DEPTH[kind]} layers (leave --n-layers out)")
        if self.weights is not None and (not isinstance(self.weights, str) or not Path(self.weights).is_file()):
            raise ConfigError(f"--weights {self.weights!r}: not a file (the extractor's weights)")
        for name in ("cache", "output"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or Path(value).exists() and
                                      not Path(value).is_dir()):
                raise ConfigError(f"{option(name)} {value!r}: not a folder")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def format_patch(size: Any) -> str:
    if isinstance(size, (tuple, list)):
        return "x".join(str(v) for v in size)
    return repr(size)


def parse_patch(text: str) -> tuple[int, ...]:
    """``"640x480"`` -> ``(640, 480)``; anything else raises ValueError."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise ValueError(text)
    return tuple(int(p) for p in parts)


# ------------------------------------------------------------------------------------------------ images
def find_images(folders: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files under ``folders``, recursively, sorted; a folder without any is an :class:`InputError`."""
    from ..io.pairs import list_images

    images: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder (--images)")
        found = [folder / name for name in list_images(folder)]
        if not found:
            raise InputError(f"{folder}: no images (jpg, png, ...) in folder or its subfolders (--images)")
        images += found
    return images


def split_images(images: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split by image (no image in both): at least one validation and one training image."""
    import numpy as np

    if len(images) < 2:
        raise InputError(f"{len(images)} image(s) found: at least 2 are needed to split into training and "
                         "validation images (--images)")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = min(max(1, int(round(val_fraction * len(images)))), len(images) - 1)
    val = sorted(images[i] for i in order[:n_val])
    train = sorted(images[i] for i in order[n_val:])
    return train, val


def total_steps(config: TrainConfig, n_train: int) -> int:
    """``--steps``, or ``--epochs`` over ``n_train`` images in batches (at least 1 step)."""
    if config.steps is not None:
        return config.steps
    steps = max(1, int(round(config.epochs * n_train / config.batch_size)))
    if steps > INT_LIMITS["steps"][1]:
        raise ConfigError(f"--epochs {config.epochs:g}: {steps} steps, more than the {INT_LIMITS['steps'][1]} allowed")
    return steps


# ------------------------------------------------------------------------------------------------ run folder
def run_lock(folder: str | os.PathLike) -> FolderLock:
    """The lock that keeps a second run out of ``folder``."""
    return FolderLock(folder, advice="wait for it to finish, or choose another -o")


def check_run_folder(output: str | os.PathLike, resume: bool) -> None:
    """``output`` is not in use by another run; ``--resume`` needs a run (``last.pth``) there; a new run refuses a
    folder that holds one."""
    run_lock(output).check_free()
    check_run_state(output, resume)


def check_run_state(output: str | os.PathLike, resume: bool) -> None:
    """The part of :func:`check_run_folder` that the lock's holder repeats."""
    folder = Path(output)
    has_run = (folder / "last.pth").is_file()
    if resume and not has_run:
        what = "does not exist" if not folder.exists() else "holds no run to resume (no last.pth)"
        raise ConfigError(f"{folder}: {what}; start the run without --resume")
    if not resume and has_run:
        raise ConfigError(f"{folder}: holds a run already; add --resume to continue it or choose another -o")
