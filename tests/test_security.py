"""No file lightmatch reads can run code: crafted pickles (whose unpickling would create a marker file) given as
weights in every way a weights file reaches the loader, and as HDF5 attributes, are refused with one line naming
the file, and the marker never appears."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightmatch import weights
from lightmatch.cli import main
from lightmatch.errors import WeightsError

ASSETS = Path(__file__).resolve().parents[1] / "assets"


class _Payload:
    """Unpickling it opens (creates) ``marker`` for writing: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path: Path, marker: Path, kind: str) -> Path:
    """A weights file whose loading with full unpickling would create ``marker``: torch's zip format or a bare
    pickle stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"layer.weight": torch.zeros(2), "evil": _Payload(marker)}
    if kind == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "unpickling ran code"


def _one_line_error(result, path: Path) -> str:
    err = result.output.strip() if not result.stderr_bytes else result.stderr.strip()
    assert result.exit_code == 1, result.output
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", ["zip", "pickle"])
@pytest.mark.parametrize("name", sorted(weights.REGISTRY))
def test_every_registry_weights_file_refuses_a_crafted_pickle(tmp_path: Path, marker: Path, monkeypatch, kind: str,
                                                              name: str) -> None:
    """Explicit path (--weights / --matcher-weights), $LIGHTMATCH_WEIGHTS_DIR and the download cache: each refused."""
    spec = weights.REGISTRY[name]
    explicit = _crafted(tmp_path / "given" / spec.filename, marker, kind)
    with pytest.raises(WeightsError, match=str(explicit)):
        weights.load_state_dict(name, explicit)
    for variable in ("LIGHTMATCH_WEIGHTS_DIR", "LIGHTMATCH_CACHE_DIR"):
        folder = tmp_path / variable
        planted = _crafted(folder / spec.filename, marker, kind)
        monkeypatch.setenv(variable, str(folder))
        monkeypatch.setattr(weights, "_package_file", lambda spec: None)  # the shipped file would win otherwise
        with pytest.raises(WeightsError, match=str(planted)) as info:
            weights.load_state_dict(name)
        assert "\n" not in str(info.value)
        monkeypatch.delenv(variable)


@pytest.mark.parametrize("flag", ["--weights", "--matcher-weights"])
@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_cli_refuses_crafted_weights_in_one_line(tmp_path: Path, marker: Path, flag: str, kind: str) -> None:
    evil = _crafted(tmp_path / "evil.pth", marker, kind)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["match", str(ASSETS / "sample0.jpg"), str(ASSETS / "sample1.jpg"),
                                       "-o", str(out), "--resize", "256", flag, str(evil)])
    err = _one_line_error(result, evil)
    assert "does not unpickle" in err
    assert not out.exists()


def test_cli_refuses_crafted_weights_from_the_weights_dir(tmp_path: Path, marker: Path) -> None:
    """A file without a registry digest (sift_lightglue) found through $LIGHTMATCH_WEIGHTS_DIR is loaded safely."""
    folder = tmp_path / "weights"
    evil = _crafted(folder / weights.REGISTRY["sift_lightglue"].filename, marker, "pickle")
    result = CliRunner(env={"LIGHTMATCH_WEIGHTS_DIR": str(folder)}).invoke(
        main, ["match", str(ASSETS / "sample0.jpg"), str(ASSETS / "sample1.jpg"), "--resize", "256",
               "--features", "sift", "--max-keypoints", "64"])
    _one_line_error(result, evil)


def test_hdf5_attributes_are_never_unpickled(tmp_path: Path, marker: Path) -> None:
    """Stores are read with h5py and JSON only: pickled bytes in attributes and opaque data stay bytes."""
    from lightmatch.io import h5
    from lightmatch.io.store import OutputStore

    blob = np.void(pickle.dumps(_Payload(marker)))
    out = tmp_path / "out"
    out.mkdir()
    with h5py.File(out / "features.h5", "w") as f:
        f.attrs["lightmatch_extractor"] = blob
        f.attrs["lightmatch_settings"] = np.frombuffer(pickle.dumps(_Payload(marker)), np.uint8)
        f.create_dataset("junk", data=blob)
    with pytest.raises(Exception) as info:  # other settings than this run's: refused, nothing run
        OutputStore(out, {"lightmatch_extractor": "aliked"}).open()
    assert "settings" in str(info.value)
    with h5py.File(out / "features.h5", "r") as f:
        list(h5.feature_groups(f))
