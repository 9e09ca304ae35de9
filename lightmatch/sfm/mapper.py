"""pycolmap's mappers on a COLMAP database, and what the models they find hold.

pycolmap is an optional extra (``lightmatch[sfm]``): :func:`import_pycolmap` names it when it is missing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

MAPPERS = ("incremental", "global")
SFM_EXTRA = 'pip install "lightmatch[sfm]"'


def import_pycolmap():
    """The pycolmap module, or a one-line :class:`ConfigError` naming the extra that installs it."""
    try:
        import pycolmap
    except ImportError:
        raise ConfigError(f"reconstruct needs pycolmap, the 'sfm' extra: {SFM_EXTRA}") from None
    return pycolmap


@dataclass
class ModelStats:
    """One model: its folder, registered images, 3D points, observations, mean track length and mean reprojection
    error (pixels)."""

    path: str
    registered: int
    points: int
    observations: int
    mean_track_length: float
    mean_reprojection_error: float


def run_mapper(database: Path, image_dir: Path, sparse_dir: Path, mapper: str = "incremental",
               seed: int = 0, verbose: bool = False) -> dict[int, object]:
    """Run pycolmap's ``incremental`` (COLMAP) or ``global`` (GLOMAP) mapper; each model found is written to
    ``sparse_dir/N`` (largest first), whatever an earlier run left there is removed first. Returns N -> model."""
    pycolmap = import_pycolmap()
    if mapper not in MAPPERS:
        raise ConfigError(f"unknown mapper {mapper!r}; choose {' or '.join(MAPPERS)}")
    if sparse_dir.exists():
        shutil.rmtree(sparse_dir)
    work = sparse_dir.with_name(f".{sparse_dir.name}.tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if verbose else 2  # COLMAP's INFO and WARNING lines only when asked for
    try:
        found = _map(pycolmap, database, image_dir, work, mapper, seed)
    finally:
        pycolmap.logging.minloglevel = level
    shutil.rmtree(work)
    models = sorted(found.values(), key=lambda r: -r.num_reg_images())
    sparse_dir.mkdir(parents=True)
    out = {}
    for index, model in enumerate(models):
        folder = sparse_dir / str(index)
        folder.mkdir()
        model.write(str(folder))
        out[index] = model
    return out


def _map(pycolmap, database: Path, image_dir: Path, work: Path, mapper: str, seed: int) -> dict:
    if mapper == "incremental":
        options = pycolmap.IncrementalPipelineOptions()
        options.random_seed = seed
        # COLMAP 4's structure-less fallback (generalised relative pose RANSAC for every image that fails to register)
        # ran for over 20 min on a 57-image mixed folder without registering more; without it: 17 s
        # (docs/reconstruction.md)
        options.structure_less_registration_fallback = False
        return pycolmap.incremental_mapping(str(database), str(image_dir), str(work), options)
    options = pycolmap.GlobalPipelineOptions()
    options.random_seed = seed
    return pycolmap.global_mapping(str(database), str(image_dir), str(work), options)


def model_stats(model, path: Path) -> ModelStats:
    """:class:`ModelStats` of a pycolmap reconstruction."""
    return ModelStats(str(path), model.num_reg_images(), model.num_points3D(), model.compute_num_observations(),
                      model.compute_mean_track_length(), model.compute_mean_reprojection_error())
