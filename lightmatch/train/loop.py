"""The training loop: batches of homography pairs through a frozen extractor, the matcher's loss, Adam with
glue-factory's schedule, validation, atomic checkpoints, exact resume and the export of the matcher's weights.

Run directory: ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one JSON object per logged step
and per validation), ``curves.png``, ``last.pth`` (everything needed to resume), ``best.pth`` (lowest validation
loss), ``matcher.pth`` + ``matcher.json`` (the exported weights in the official key layout and the architecture).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import ConfigError, InputError, LightmatchError
from ..eval.metrics import evaluate_homography_pair, homography_summary
from ..io.atomic import atomic_output
from ..models.base import Extractor
from ..models.factory import feature_family, load_extractor, resolve_device
from ..models.lightglue import VARIANTS, LightGlue, PaddedPairs, filter_matches
from ..models.padding import pad_stack
from ..models.superglue import SuperGlue
from ..types import Features
from .data import HomographyConfig, PairSource, find_images, ground_truth, split_images
from .losses import LossTerms, assignment_weights, lightglue_loss, superglue_loss

RECIPE_EPOCHS, DECAY_START_EPOCH = 40, 20  # glue-factory: constant lr for 20 of 40 epochs, then x10^-0.1 per epoch
# Validation matches: every mutual best match (glue-factory validates with filter_threshold 0; its AUC uses these),
# and those above LightGlue's default filter_threshold 0.1, the operating point of `lightmatch match`.
VAL_MATCH_THRESHOLDS = (0.0, 0.1)


class TrainingError(LightmatchError):
    """Training cannot go on (e.g. out of memory); the message says what to change."""


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
    n_layers: Optional[int] = None  # default: the official depth (9)
    num_keypoints: int = 512
    val_every: int = 100
    val_pairs: int = 16
    val_fraction: float = 0.1
    checkpoint_every: int = 100
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast; fp16 with a GradScaler)
    seed: int = 0
    grad_clip: float = 1.0
    checkpointing: bool = False  # gradient checkpointing of the matcher's layers
    cache: Optional[str] = None
    patch_size: tuple[int, int] = (640, 480)
    log_every: int = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)} (--config)")
        values = dict(values)
        if "patch_size" in values:
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)


# ------------------------------------------------------------------------------------------------ models
def build_matcher(config: TrainConfig) -> torch.nn.Module:
    """The matcher to train: random (``scratch``), the official weights (``official``) or a checkpoint (a path)."""
    family = feature_family(config.features)
    if config.matcher == "lightglue":
        if family not in VARIANTS:
            raise ConfigError(f"--features {config.features}: LightGlue training supports {', '.join(VARIANTS)}")
        variant = VARIANTS[family]
        if config.n_layers is not None:
            variant = replace(variant, n_layers=config.n_layers)
        if config.init == "scratch":
            return LightGlue(variant, pretrained=False, depth_confidence=-1, width_confidence=-1)
        path = None if config.init == "official" else config.init
        model = LightGlue(variant, weights_path=path, depth_confidence=-1, width_confidence=-1)
        if config.n_layers is not None and len(model.transformers) != config.n_layers:
            raise ConfigError(f"--n-layers {config.n_layers}: the {config.init} weights have "
                              f"{len(model.transformers)} layers")
        return model
    if config.matcher == "superglue":
        if family != "superpoint":
            raise ConfigError("--matcher superglue is trained on SuperPoint features: use --features superpoint")
        layers = ("self", "cross") * (config.n_layers or 9)
        if config.init == "scratch":
            return SuperGlue(pretrained=False, gnn_layers=layers)
        return SuperGlue(weights_path=None if config.init == "official" else config.init, gnn_layers=layers)
    raise ConfigError(f"--matcher {config.matcher}: choose lightglue or superglue")


def build_extractor(config: TrainConfig, device: torch.device) -> Extractor:
    """Frozen extractor with exactly ``num_keypoints`` per image (detection threshold 0, no resizing)."""
    options: dict[str, Any] = {"detection_threshold": 0.0} if config.features != "sift" else {}
    extractor = load_extractor(config.features, max_keypoints=config.num_keypoints, resize=None, device=device,
                               **options)
    return extractor.eval().requires_grad_(False)


def export_matcher(model: torch.nn.Module, config: TrainConfig, path: Path) -> None:
    """Plain state dict in the official key layout (loads strictly into the reference) + ``matcher.json`` beside it
    with the architecture; our loaders also read the depth from the keys, so ``--matcher-weights PATH`` suffices."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if isinstance(model, LightGlue):
        # the reference keeps its early-exit thresholds as a saved buffer: with it the file loads strictly there
        state["confidence_thresholds"] = model.confidence_thresholds.detach().cpu().clone()
        v = model.variant
        arch = {"matcher": "lightglue", "features": feature_family(config.features), "n_layers": v.n_layers,
                "input_dim": v.input_dim, "descriptor_dim": v.descriptor_dim, "num_heads": v.num_heads,
                "add_scale_ori": v.add_scale_ori}
    else:
        arch = {"matcher": "superglue", "features": "superpoint", "n_layers": len(model.gnn.layers) // 2,
                "descriptor_dim": model.descriptor_dim}
    with atomic_output(path, "exported weights") as tmp:
        torch.save(state, tmp)
    with atomic_output(path.with_suffix(".json"), "architecture") as tmp:
        tmp.write_text(json.dumps(arch, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Batch:
    """Features of B pairs padded to L points, their homographies and ground truth."""

    feats: list[tuple[Features, Features]]
    H: torch.Tensor  # (B, 3, 3)
    weights: torch.Tensor  # (B, L + 1, L + 1)
    matches0: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, 2, L)


class FeatureSource:
    """Features of the samples of a :class:`PairSource`, extracted on the fly or read from a cache folder keyed by
    the extractor settings and the stream (images, seed, homography settings)."""

    def __init__(self, pairs: PairSource, extractor: Extractor, config: TrainConfig) -> None:
        self.pairs, self.extractor = pairs, extractor
        self.folder: Optional[Path] = None
        if config.cache:
            settings = repr((config.features, config.num_keypoints, "threshold0", "noresize"))
            key = hashlib.sha256(settings.encode()).hexdigest()[:12]
            self.folder = Path(config.cache) / f"{config.features}-{key}" / f"{pairs.split}-{pairs.fingerprint()}"

    def _extract(self, image: np.ndarray) -> Features:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        return self.extractor.extract(tensor).to("cpu")

    def __getitem__(self, index: int) -> tuple[Features, Features, np.ndarray]:
        path = None if self.folder is None else self.folder / f"{index}.pt"
        if path is not None and path.is_file():
            item = torch.load(path, weights_only=False)
            return item["f0"], item["f1"], item["H"]
        sample = self.pairs[index]
        item = {"f0": self._extract(sample.image0), "f1": self._extract(sample.image1), "H": sample.H_0to1}
        if path is not None:
            with atomic_output(path, "feature cache") as tmp:
                torch.save(item, tmp)
        return item["f0"], item["f1"], item["H"]

    def batch(self, indices: list[int], length: int) -> Batch:
        items = [self[i] for i in indices]
        feats = [(f0, f1) for f0, f1, _ in items]
        H = torch.tensor(np.stack([h for _, _, h in items]), dtype=torch.float64)
        k0, mask0 = pad_stack([f0.keypoints for f0, _ in feats], length)
        k1, mask1 = pad_stack([f1.keypoints for _, f1 in feats], length)
        assignment, m0, m1 = ground_truth(k0, k1, H, mask0, mask1)
        return Batch(feats, H, assignment_weights(assignment, m0, m1), m0, torch.stack([mask0, mask1], 1))


# ------------------------------------------------------------------------------------------------ training
def lr_factor(step: int, total_steps: int) -> float:
    """glue-factory's schedule mapped onto ``total_steps``: the run is 40 recipe epochs; the lr is constant for
    the first 20, then multiplied by 10^-0.1 per epoch."""
    epoch = int(step * RECIPE_EPOCHS / max(total_steps, 1))
    return 10.0 ** (-max(0, epoch - DECAY_START_EPOCH + 1) / 10.0) if epoch >= DECAY_START_EPOCH else 1.0


def forward_loss(model: torch.nn.Module, batch: Batch, checkpointing: bool) -> LossTerms:
    device = next(model.parameters()).device
    weights = batch.weights.to(device)
    mask = batch.mask.to(device)
    if isinstance(model, LightGlue):
        padded: PaddedPairs = model.pad_pairs(batch.feats, mask.shape[-1]).to(device)
        return lightglue_loss(model, model(padded, checkpointing=checkpointing), mask, weights)
    sides = [[p[k].to(device) for p in batch.feats] for k in (0, 1)]
    length = mask.shape[-1]
    k0, k1 = [pad_stack([f.keypoints for f in s], length)[0] for s in sides]
    s0, s1 = [pad_stack([f.scores for f in s], length)[0] for s in sides]
    d0, d1 = [pad_stack([f.descriptors for f in s], length)[0] for s in sides]
    size0, size1 = [torch.tensor([f.image_size for f in s], dtype=torch.float32, device=device) for s in sides]
    la = model(k0, s0, d0, k1, s1, d1, size0, size1, mask[:, 0], mask[:, 1])
    return superglue_loss(la, weights)


def predicted_matches(log_assignment: torch.Tensor, mask: torch.Tensor, threshold: float) -> list[np.ndarray]:
    """Mutual best matches above ``threshold`` of each pair's final ``(L + 1, L + 1)`` log assignment."""
    out = []
    for la, msk in zip(log_assignment, mask):
        m, n = int(msk[0].sum()), int(msk[1].sum())
        m0, _, _, _ = filter_matches(la[:m, :n].float(), threshold)
        out.append(m0.cpu().numpy())
    return out


class Trainer:
    """One run in ``config.output``; :meth:`run` trains to the end (resuming from ``last.pth`` when asked)."""

    def __init__(self, config: TrainConfig, resume: bool = False,
                 progress: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.config, self.progress = config, progress or (lambda info: None)
        self.rundir = Path(config.output)
        self.device = resolve_device(config.device)
        if config.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"--precision {config.precision}: choose fp32, fp16 or bf16")
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("--precision fp16 needs CUDA (GradScaler); use fp32 or bf16 on the CPU")
        if config.batch_size < 1 or config.num_keypoints < 8:
            raise ConfigError("--batch-size must be >= 1 and --num-keypoints >= 8")
        train_images, val_images = split_images(find_images(config.images), config.val_fraction, config.seed)
        hconf = HomographyConfig(patch_size=tuple(config.patch_size))
        self.extractor = build_extractor(config, self.device)
        self.train_data = FeatureSource(PairSource(train_images, "train", config.seed, hconf), self.extractor, config)
        self.val_data = FeatureSource(PairSource(val_images, "val", config.seed, hconf), self.extractor, config)
        self.n_train = len(train_images)
        self.total_steps = self._total_steps()
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_matcher(config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: lr_factor(s, self.total_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        self.step, self.best = 0, float("inf")
        if resume:
            self._load(self.rundir / "last.pth")
        elif (self.rundir / "last.pth").exists():
            raise ConfigError(f"{self.rundir}: holds a run already; add --resume to continue it or choose another -o")

    def _total_steps(self) -> int:
        c = self.config
        if (c.steps is None) == (c.epochs is None):
            raise ConfigError("give exactly one of --steps and --epochs")
        if c.steps is not None:
            if c.steps < 1:
                raise ConfigError("--steps must be positive")
            return c.steps
        return max(1, int(round(c.epochs * self.n_train / c.batch_size)))

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "best": self.best, "config": asdict(self.config),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def _save(self, name: str) -> None:
        with atomic_output(self.rundir / name, "checkpoint") as tmp:
            torch.save(self._state(), tmp)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"{path}: no checkpoint to resume from (--resume)")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best = int(state["step"]), float(state["best"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metrics logged after the checkpoint (a killed run may have logged steps that are redone)."""
        path = self.rundir / "metrics.jsonl"
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["step"] <= self.step]
            with atomic_output(path, "metrics") as tmp:
                tmp.write_text("".join(ln + "\n" for ln in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.rundir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- steps
    def _autocast(self):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _train_step(self) -> dict[str, float]:
        c = self.config
        indices = list(range(self.step * c.batch_size, (self.step + 1) * c.batch_size))
        batch = self.train_data.batch(indices, c.num_keypoints)
        self.model.train()
        with torch.enable_grad():
            with self._autocast():
                terms = forward_loss(self.model, batch, c.checkpointing)
            loss = terms.total.mean()
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at step {self.step}: lower --lr or use --precision fp32")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.item(), "loss_last": terms.last.mean().item(),
                "loss_confidence": terms.confidence.mean().item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss, match precision/recall (in %, at each of :data:`VAL_MATCH_THRESHOLDS`) and homography AUC (RANSAC,
        mutual best matches) over the fixed validation pairs."""
        c = self.config
        self.model.eval()
        losses: list[float] = []
        results: dict[float, list] = {t: [] for t in VAL_MATCH_THRESHOLDS}
        for start in range(0, c.val_pairs, c.batch_size):
            indices = list(range(start, min(start + c.batch_size, c.val_pairs)))
            batch = self.val_data.batch(indices, c.num_keypoints)
            with self._autocast():
                terms = forward_loss(self.model, batch, False)
            losses += terms.total.float().cpu().tolist()
            la = terms.log_assignment
            if not isinstance(self.model, LightGlue):  # SuperGlue's log assignment is scaled by M + N
                la = la - torch.log(batch.mask.sum((1, 2)).to(la)).view(-1, 1, 1)
            for threshold, out in results.items():
                for (f0, f1), m0, H in zip(batch.feats, predicted_matches(la, batch.mask, threshold), batch.H):
                    out.append(evaluate_homography_pair(f0.keypoints.numpy(), f1.keypoints.numpy(), m0, H.numpy(),
                                                        f0.image_size))
        record = {"val_loss": float(np.mean(losses))}
        for threshold, out in results.items():
            summary = homography_summary(out)
            suffix = "" if threshold == 0 else f"@{threshold:g}"
            record.update({f"precision{suffix}": summary["precision"], f"recall{suffix}": summary["recall"]})
            if threshold == 0:
                record.update({f"auc@{t}px": summary[f"auc_ransac@{t}px"] for t in (1, 3, 5)})
        return record

    def run(self) -> dict[str, Any]:
        """Train until ``total_steps``; returns the last validation metrics and where the outputs are."""
        from .curves import plot_curves

        c = self.config
        self.rundir.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.rundir / "config.json", "config") as tmp:
            tmp.write_text(json.dumps({**asdict(c), "total_steps": self.total_steps}, indent=2) + "\n")
        if self.step == 0 and not (self.rundir / "metrics.jsonl").exists():
            self._log({"step": 0, "split": "val", **self.validate()})
        last_val: dict[str, float] = {}
        tic, done_pairs = time.perf_counter(), 0
        while self.step < self.total_steps:
            try:
                record = self._train_step()
            except torch.cuda.OutOfMemoryError as exc:
                raise TrainingError(f"out of memory at --batch-size {c.batch_size} with --num-keypoints "
                                    f"{c.num_keypoints}: lower one of them, or add --precision bf16 / "
                                    "--gradient-checkpointing") from exc
            self.step += 1
            done_pairs += c.batch_size
            rate = done_pairs / max(time.perf_counter() - tic, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]
            info = {"step": self.step, "total": self.total_steps, "lr": lr, "pairs_per_s": rate, **record}
            if self.step % c.log_every == 0 or self.step == self.total_steps:
                self._log({"split": "train", **info})
            if self.step % c.val_every == 0 or self.step == self.total_steps:
                last_val = self.validate()
                self._log({"step": self.step, "split": "val", **last_val})
                info.update(last_val)
                if last_val["val_loss"] < self.best:
                    self.best = last_val["val_loss"]
                    self._save("best.pth")
                    export_matcher(self.model, c, self.rundir / "matcher.pth")
            if self.step % c.checkpoint_every == 0 or self.step == self.total_steps:
                self._save("last.pth")
            self.progress(info)
        plot_curves(self.rundir / "metrics.jsonl", self.rundir / "curves.png")
        return {"steps": self.step, "best_val_loss": self.best, "rundir": str(self.rundir), **last_val}


def train(config: TrainConfig, resume: bool = False,
          progress: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``config``; see :class:`Trainer`."""
    return Trainer(config, resume, progress).run()
