"""The training loop: batches of homography pairs through a frozen extractor, the matcher's loss, Adam with
glue-factory's schedule, validation, atomic checkpoints, exact resume and the export of the matcher's weights.

Run directory: ``config.json`` (the resolved configuration), ``metrics.jsonl`` (one JSON object per logged step
and per validation), ``curves.png``, ``last.pth`` (everything needed to resume), ``best.pth`` (lowest validation
loss), ``matcher.pth`` + ``matcher.json`` (the exported weights in the official key layout and the architecture).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from .. import precision as amp
from ..errors import ConfigError, InputError, LightmatchError, OutputError, WeightsError
from ..eval.metrics import evaluate_homography_pair, homography_summary
from ..io.atomic import atomic_output
from ..io.lock import fcntl
from ..models.base import Extractor
from ..models.factory import feature_family, resolve_device
from ..models.lightglue import VARIANTS, LightGlue, PaddedPairs, filter_matches
from ..models.padding import pad_stack
from ..models.superglue import SuperGlue
from ..models.xfeat import LIGHTERGLUE, lighterglue
from ..pipeline.spec import ORIGINAL_SIZE, ModelSpec
from ..types import Features
from ..weights import CHECKPOINT_FORMAT
from . import checkpoint
from .checkpoint import load_cache_item, rng_state, save_cache_item, set_rng_state
from .config import TrainConfig, check_run_folder, check_run_state, find_images, run_lock, split_images, total_steps
from .data import HomographyConfig, PairSource, ground_truth
from .losses import LossTerms, assignment_weights, lightglue_loss, superglue_loss

__all__ = ["TrainConfig", "Trainer", "TrainingError", "TrainingStopped", "train"]

RECIPE_EPOCHS, DECAY_START_EPOCH = 40, 20  # glue-factory: constant lr for 20 of 40 epochs, then x10^-0.1 per epoch
# Validation matches: every mutual best match (glue-factory validates with filter_threshold 0; its AUC uses these),
# and those above LightGlue's default filter_threshold 0.1, the operating point of `lightmatch match`.
VAL_MATCH_THRESHOLDS = (0.0, 0.1)
CACHE_LOCK = ".lightmatch-cache.lock"


class TrainingError(LightmatchError):
    """Training cannot go on (e.g. out of memory); the message says what to change."""


class TrainingStopped(LightmatchError):
    """The run was asked to stop (Ctrl-C, SIGTERM): the message says where it stopped and how to resume."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


# ------------------------------------------------------------------------------------------------ models
def build_matcher(config: TrainConfig) -> torch.nn.Module:
    """The matcher to train: random (``scratch``), the official weights (``official``) or a weights file (a path)."""
    family = feature_family(config.features)
    path = None if config.init in ("scratch", "official") else config.init
    if config.matcher == "lightglue":
        adaptive = {"depth_confidence": -1, "width_confidence": -1}
        variant = LIGHTERGLUE if family == "xfeat" else VARIANTS[family]
        if config.init == "scratch":
            if config.n_layers is not None:
                variant = replace(variant, n_layers=config.n_layers)
            return LightGlue(variant, pretrained=False, **adaptive)
        # XFeat's LighterGlue file holds the matcher under "matcher." beside the extractor; exports keep that layout
        model = lighterglue(weights_path=path, **adaptive) if family == "xfeat" else \
            LightGlue(variant, weights_path=path, **adaptive)
        if config.n_layers is not None and len(model.transformers) != config.n_layers:
            raise WeightsError(f"--n-layers {config.n_layers}: the {config.init} weights have "
                               f"{len(model.transformers)} layers")
        return model
    layers = ("self", "cross") * (config.n_layers or 9)
    if config.init == "scratch":
        return SuperGlue(pretrained=False, gnn_layers=layers)
    return SuperGlue(weights_path=path, gnn_layers=layers)


def build_extractor(config: TrainConfig, device: torch.device) -> Extractor:
    """Frozen extractor with exactly ``num_keypoints`` per image (detection threshold 0, no resizing)."""
    settings: dict[str, Any] = {"max_keypoints": config.num_keypoints, "resize": ORIGINAL_SIZE}
    if config.features != "sift":
        settings["detection_threshold"] = 0.0
    spec = ModelSpec(config.features, "nn", extractor_weights=config.weights, extractor_settings=settings,
                     precision="fp32", device=str(device))
    return spec.load()[0].eval().requires_grad_(False)


def export_matcher(model: torch.nn.Module, config: TrainConfig, path: Path) -> None:
    """Plain state dict in the official key layout (loads strictly into the reference) + ``matcher.json`` beside it
    with the architecture; our loaders also read the depth from the keys, so ``--matcher-weights PATH`` suffices.
    XFeat's LighterGlue is written as its official file is: the matcher's keys under ``matcher.``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    family = feature_family(config.features)
    if isinstance(model, LightGlue):
        # the reference keeps its early-exit thresholds as a saved buffer: with it the file loads strictly there
        state["confidence_thresholds"] = model.confidence_thresholds.detach().cpu().clone()
        v = model.variant
        arch = {"matcher": "lightglue", "features": family, "n_layers": v.n_layers,
                "input_dim": v.input_dim, "descriptor_dim": v.descriptor_dim, "num_heads": v.num_heads,
                "add_scale_ori": v.add_scale_ori}
        if family == "xfeat":
            state = {f"matcher.{k}": v for k, v in state.items()}
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
    the extractor settings and the stream (images, seed, homography settings). ``keep``: also hold them in memory
    once computed, for samples read again and again (the fixed validation pairs, at every validation)."""

    def __init__(self, pairs: PairSource, extractor: Extractor, config: TrainConfig, keep: bool = False) -> None:
        self.pairs, self.extractor = pairs, extractor
        self.kept: Optional[dict[int, tuple[Features, Features, np.ndarray]]] = {} if keep else None
        self.folder: Optional[Path] = None
        if config.cache:
            settings = repr((config.features, config.num_keypoints, "threshold0", "noresize", config.weights,
                             checkpoint.CACHE_FORMAT))
            key = hashlib.sha256(settings.encode()).hexdigest()[:12]
            self.folder = Path(config.cache) / f"{config.features}-{key}" / f"{pairs.split}-{pairs.fingerprint()}"

    def cached(self, count: int) -> int:
        """How many of samples ``0 .. count - 1`` are in the cache."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        stems = (name[:-3] for name in os.listdir(self.folder) if name.endswith(".pt"))
        return sum(1 for stem in stems if stem.isdigit() and int(stem) < count)

    def _extract(self, image: np.ndarray) -> Features:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        return self.extractor.extract(tensor).to("cpu")

    def __getitem__(self, index: int) -> tuple[Features, Features, np.ndarray]:
        if self.kept is not None and index in self.kept:
            return self.kept[index]
        item = self._compute(index)
        if self.kept is not None:
            self.kept[index] = item
        return item

    def _compute(self, index: int) -> tuple[Features, Features, np.ndarray]:
        path = None if self.folder is None else self.folder / f"{index}.pt"
        if path is not None and path.is_file():
            return load_cache_item(path)
        sample = self.pairs[index]
        f0, f1 = self._extract(sample.image0), self._extract(sample.image1)
        if path is not None:
            save_cache_item(path, f0, f1, sample.H_0to1)
        return f0, f1, sample.H_0to1

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


Progress = Callable[[dict[str, Any]], None]


class Trainer:
    """One run in ``config.output``; :meth:`run` trains to the end (resuming from ``last.pth`` when asked).

    The caller holds the run folder's lock (:func:`train` does). ``progress`` receives ``{"event": ...}`` dicts:
    ``prepare`` (what the run will do), ``features`` (validation features computed so far), ``step`` (after each
    step). ``should_stop`` is polled after each step and each validation sample: when it returns True the run
    writes ``last.pth`` and raises :class:`TrainingStopped`.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, progress: Optional[Progress] = None,
                 should_stop: Optional[Callable[[], bool]] = None) -> None:
        config.check()
        self.config, self.progress = config, progress or (lambda info: None)
        self.should_stop = should_stop or (lambda: False)
        self.rundir = Path(config.output)
        self.device = resolve_device(config.device)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("--precision fp16 needs CUDA (GradScaler); use fp32 or bf16 on the CPU")
        train_images, val_images = split_images(find_images(config.images), config.val_fraction, config.seed)
        self.n_train = len(train_images)
        self.total_steps = total_steps(config, self.n_train)
        saved = None
        if resume:  # read (and check) the checkpoint before any model is built
            saved = checkpoint.load(self.rundir / "last.pth", CHECKPOINT_FORMAT, "training checkpoint",
                                    "start the run again without --resume in a new -o folder",
                                    map_location=self.device)
        hconf = HomographyConfig(patch_size=tuple(config.patch_size))
        self.extractor = build_extractor(config, self.device)
        self.train_data = FeatureSource(PairSource(train_images, "train", config.seed, hconf), self.extractor, config)
        self.val_data = FeatureSource(PairSource(val_images, "val", config.seed, hconf), self.extractor, config,
                                      keep=True)
        self.n_val = len(val_images)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_matcher(config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda s: lr_factor(s, self.total_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        self.step, self.best = 0, float("inf")
        if saved is not None:
            self._restore(saved, self.rundir / "last.pth")
        self._trim_metrics()

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        config = {**asdict(self.config), "patch_size": list(self.config.patch_size)}
        return {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "best": self.best, "config": config,
                "rng": rng_state()}

    def _save(self, name: str) -> None:
        checkpoint.save(self._state(), self.rundir / name, "checkpoint")

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.best = int(state["step"]), float(state["best"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0][:120] if str(exc) else ""
            raise InputError(f"{path}: checkpoint does not fit this run ({type(exc).__name__}: {first}); resume "
                             "with the run's own settings (RUNDIR/config.json)") from None

    def _trim_metrics(self) -> None:
        """Keep the metrics logged up to the checkpoint's step (a killed run may have logged steps that are redone,
        and its last line may be cut short); a new run starts an empty log."""
        path = self.rundir / "metrics.jsonl"
        if not path.exists():
            return
        if self.step == 0:
            path.unlink()
            return
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= self.step:
                kept.append(line)
        with atomic_output(path, "metrics") as tmp:
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.rundir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- steps
    def _autocast(self):
        return amp.autocast(amp.resolve(self.config.precision, self.device), self.device)

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
    def validate(self, report: bool = False) -> dict[str, float]:
        """Loss, match precision/recall (in %, at each of :data:`VAL_MATCH_THRESHOLDS`) and homography AUC (RANSAC,
        mutual best matches) over the fixed validation pairs. ``report``: send ``features`` progress events and
        poll ``should_stop`` after each batch (the first validation, which extracts the features)."""
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
            if report:
                self.progress({"event": "features", "what": "validation pairs", "done": indices[-1] + 1,
                               "total": c.val_pairs})
                if self.should_stop():
                    raise TrainingStopped(f"stopped before the first step: nothing to resume; run the same command "
                                          f"again to start {self.rundir}", 0)
        record = {"val_loss": float(np.mean(losses))}
        for threshold, out in results.items():
            summary = homography_summary(out)
            suffix = "" if threshold == 0 else f"@{threshold:g}"
            record.update({f"precision{suffix}": summary["precision"], f"recall{suffix}": summary["recall"]})
            if threshold == 0:
                record.update({f"auc@{t}px": summary[f"auc_ransac@{t}px"] for t in (1, 3, 5)})
        return record

    def _announce(self) -> None:
        c = self.config
        todo = (self.total_steps - self.step) * c.batch_size
        self.progress({"event": "prepare", "extractor": c.features, "keypoints": c.num_keypoints,
                       "device": str(self.device), "train_images": self.n_train, "val_images": self.n_val,
                       "start": self.step, "steps": self.total_steps, "train_pairs": todo,
                       "train_cached": self.train_data.cached(self.total_steps * c.batch_size),
                       "val_pairs": c.val_pairs, "val_cached": self.val_data.cached(c.val_pairs), "cache": c.cache})

    def run(self) -> dict[str, Any]:
        """Train until ``total_steps``; returns the last validation metrics and where the outputs are."""
        from .curves import plot_curves

        c = self.config
        with atomic_output(self.rundir / "config.json", "config") as tmp:
            tmp.write_text(json.dumps({**asdict(c), "total_steps": self.total_steps}, indent=2) + "\n")
        self._announce()
        if self.step == 0 and c.val_pairs > 0:
            self._log({"step": 0, "split": "val", **self.validate(report=True)})
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
            info = {"event": "step", "step": self.step, "total": self.total_steps, "lr": lr, "pairs_per_s": rate,
                    **record}
            end = self.step == self.total_steps
            if self.step % c.log_every == 0 or end:
                self._log({"split": "train", **{k: v for k, v in info.items() if k != "event"}})
            if c.val_pairs > 0 and (self.step % c.val_every == 0 or end):
                last_val = self.validate()
                self._log({"step": self.step, "split": "val", **last_val})
                info.update(last_val)
                if last_val["val_loss"] < self.best:
                    self.best = last_val["val_loss"]
                    self._save("best.pth")
                    export_matcher(self.model, c, self.rundir / "matcher.pth")
            saved = self.step % c.checkpoint_every == 0 or end
            if saved:
                if c.val_pairs == 0:  # no validation, so no best model: export the latest
                    export_matcher(self.model, c, self.rundir / "matcher.pth")
                self._save("last.pth")
            self.progress(info)
            if not end and self.should_stop():
                if not saved:
                    self._save("last.pth")
                raise TrainingStopped(f"stopped at step {self.step} of {self.total_steps}; "
                                      f"{self.rundir / 'last.pth'} written; continue with: lightmatch train -o "
                                      f"{self.rundir} --resume", self.step)
        plot_curves(self.rundir / "metrics.jsonl", self.rundir / "curves.png")
        exported = self.rundir / "matcher.pth"
        return {"steps": self.step, "best_val_loss": self.best, "rundir": str(self.rundir),
                "weights": str(exported) if exported.is_file() else None, **last_val}


def _sweep(folder: Path, recursive: bool = False) -> None:
    """Remove the temporary files of writes killed half-way (:func:`~lightmatch.io.atomic.atomic_output`'s)."""
    for path in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _using_cache(cache: Optional[str]) -> Iterator[None]:
    """Hold a shared lock on the cache folder for the run. The first run to use a cache that no other run is
    using (its exclusive lock succeeds) first removes temporary files left there by killed runs."""
    if cache is None:
        yield
        return
    folder = Path(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / CACHE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot use as a feature cache ({exc.strerror or exc}) (--cache)") from exc
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # another run uses the cache: temporary files there may be its writes in progress
            else:
                _sweep(folder, recursive=True)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def train(config: TrainConfig, resume: bool = False, progress: Optional[Progress] = None,
          should_stop: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``config`` (see :class:`Trainer`), holding the run folder's lock:
    a second run on the same folder is refused. Leftover temporary files of killed writes are removed first; a
    folder this call created is removed again if the run fails before writing anything into it."""
    config.check()
    check_run_folder(config.output, resume)
    rundir = Path(config.output)
    created = not rundir.exists()
    try:
        rundir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{rundir}: cannot write the run here ({exc.strerror or exc}) (-o)") from exc
    lock = run_lock(rundir)
    try:
        lock.acquire()
        check_run_state(rundir, resume)  # again, now that no other run writes here
        _sweep(rundir)
        with _using_cache(config.cache):
            return Trainer(config, resume, progress, should_stop).run()
    finally:
        lock.release()
        if created:
            try:
                rundir.rmdir()  # only when empty
            except OSError:
                pass
