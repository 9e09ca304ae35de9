"""lightmatch.sfm.mapper: the pycolmap extra's one-line error, what run_mapper does with the folders and the models
a mapper returns (a stand-in pycolmap: no mapping runs), the options it hands pycolmap, and model statistics. The
real mappers run in test_reconstruct.py."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from lightmatch.errors import ConfigError
from lightmatch.sfm import mapper as M


class FakeModel:
    """What run_mapper and model_stats use of a pycolmap.Reconstruction."""

    def __init__(self, images: int) -> None:
        self.images = images

    def num_reg_images(self) -> int:
        return self.images

    def write(self, folder: str) -> None:
        (Path(folder) / "images.txt").write_text(f"{self.images} images\n")

    def num_points3D(self) -> int:
        return 10 * self.images

    def compute_num_observations(self) -> int:
        return 25 * self.images

    def compute_mean_track_length(self) -> float:
        return 2.5

    def compute_mean_reprojection_error(self) -> float:
        return 0.75


@pytest.fixture
def fake_pycolmap(monkeypatch):
    """A pycolmap stand-in (only its log level) and a mapper that records its call and finds three models."""
    fake = types.SimpleNamespace(logging=types.SimpleNamespace(minloglevel=1))
    monkeypatch.setitem(sys.modules, "pycolmap", fake)
    calls = []

    def fake_map(pycolmap, database, image_dir, work, mapper, seed):
        calls.append({"work_empty": not any(work.iterdir()), "level": pycolmap.logging.minloglevel,
                      "mapper": mapper, "seed": seed})
        return {0: FakeModel(3), 1: FakeModel(9), 2: FakeModel(5)}

    monkeypatch.setattr(M, "_map", fake_map)
    return fake, calls


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError
    with pytest.raises(ConfigError, match=r"^reconstruct needs pycolmap, the 'sfm' extra: pip install "
                                          r"\"lightmatch\[sfm\]\"$"):
        M.import_pycolmap()


def test_models_are_written_largest_first_over_an_earlier_run(tmp_path, fake_pycolmap):
    fake, calls = fake_pycolmap
    sparse = tmp_path / "sparse"
    (sparse / "7").mkdir(parents=True)  # an earlier run's model
    (tmp_path / ".sparse.tmp").mkdir()  # the work folder of a killed run
    (tmp_path / ".sparse.tmp" / "junk").write_text("x")
    models = M.run_mapper(tmp_path / "db", tmp_path / "imgs", sparse, "global", seed=4)
    assert [m.images for m in models.values()] == [9, 5, 3] and list(models) == [0, 1, 2]
    assert sorted(p.name for p in sparse.iterdir()) == ["0", "1", "2"]
    assert (sparse / "0" / "images.txt").read_text() == "9 images\n"
    assert not (tmp_path / ".sparse.tmp").exists()
    assert calls == [{"work_empty": True, "level": 2, "mapper": "global", "seed": 4}]  # COLMAP's log muted
    assert fake.logging.minloglevel == 1  # and restored


def test_verbose_shows_colmap_log_and_a_failure_restores_the_level(tmp_path, fake_pycolmap, monkeypatch):
    fake, calls = fake_pycolmap
    M.run_mapper(tmp_path / "db", tmp_path / "imgs", tmp_path / "sparse", verbose=True)
    assert calls[-1]["level"] == 0 and calls[-1]["mapper"] == "incremental"

    def broken(*args):
        raise RuntimeError("mapper crashed")

    monkeypatch.setattr(M, "_map", broken)
    with pytest.raises(RuntimeError, match="mapper crashed"):
        M.run_mapper(tmp_path / "db", tmp_path / "imgs", tmp_path / "sparse")
    assert fake.logging.minloglevel == 1


def test_no_model_found(tmp_path, fake_pycolmap, monkeypatch):
    monkeypatch.setattr(M, "_map", lambda *args: {})
    assert M.run_mapper(tmp_path / "db", tmp_path / "imgs", tmp_path / "sparse") == {}
    assert (tmp_path / "sparse").is_dir() and not any((tmp_path / "sparse").iterdir())


def test_unknown_mapper_touches_nothing(tmp_path, fake_pycolmap):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    with pytest.raises(ConfigError, match="unknown mapper 'glomap'; choose incremental or global"):
        M.run_mapper(tmp_path / "db", tmp_path / "imgs", tmp_path / "sparse", "glomap")
    assert (tmp_path / "sparse" / "0").is_dir()


@pytest.mark.parametrize("mapper, function, options", [
    ("incremental", "incremental_mapping", "IncrementalPipelineOptions"),
    ("global", "global_mapping", "GlobalPipelineOptions"),
])
def test_options_handed_to_pycolmap(tmp_path, monkeypatch, mapper, function, options):
    pycolmap = pytest.importorskip("pycolmap")
    seen = {}

    def record(database, image_dir, work, opts):
        seen.update(args=(database, image_dir, work), opts=opts)
        return {}

    monkeypatch.setattr(pycolmap, function, record)
    assert M._map(pycolmap, tmp_path / "db", tmp_path / "imgs", tmp_path / "w", mapper, 11) == {}
    assert seen["args"] == (str(tmp_path / "db"), str(tmp_path / "imgs"), str(tmp_path / "w"))
    assert isinstance(seen["opts"], getattr(pycolmap, options)) and seen["opts"].random_seed == 11
    if mapper == "incremental":  # the fallback that ran for 20 min without registering more
        assert seen["opts"].structure_less_registration_fallback is False


def test_model_stats(tmp_path):
    stats = M.model_stats(FakeModel(4), tmp_path / "sparse" / "0")
    assert stats == M.ModelStats(str(tmp_path / "sparse" / "0"), 4, 40, 100, 2.5, 0.75)
