"""Write errors are one line naming the file and lose nothing: every error a write can raise (ENOSPC, EFBIG, EROFS,
EACCES, h5py's RuntimeError) is simulated in part files, consolidation, atomic outputs and plots; the stores stay
as they were, no temporary file remains, and a run that fails before writing leaves no empty folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lightmatch.cli import main
from lightmatch.errors import OutputError
from lightmatch.io import atomic, h5, shards
from lightmatch.io import store as S
from lightmatch.types import Features

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ERRORS = [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), OSError(errno.EFBIG, os.strerror(errno.EFBIG)),
          OSError(errno.EROFS, os.strerror(errno.EROFS)), OSError(errno.EACCES, os.strerror(errno.EACCES)),
          RuntimeError("Can't write data (file write failed: time = Thu, errno = 28, error message = 'No space\n"
                       "left on device')"), OSError("Unable to synchronously create dataset (no space)")]
IDS = ["ENOSPC", "EFBIG", "EROFS", "EACCES", "h5py-RuntimeError", "h5py-OSError"]


def _features(n: int = 5) -> Features:
    return Features(torch.rand(n, 2) * 50, torch.rand(n), torch.rand(n, 8), (64, 48))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _raiser(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An output folder holding a consolidated features.h5 with one image."""
    folder = tmp_path / "out"
    with S.OutputStore(folder, {"lightmatch_extractor": "test"}) as st:
        st.commit({"a.png": _features()})
    assert (folder / "features.h5").is_file() and not (folder / ".parts").exists()
    return folder


@pytest.mark.parametrize("exc", ERRORS, ids=IDS)
def test_part_write_error_is_one_line_and_loses_nothing(store: Path, monkeypatch, exc: BaseException) -> None:
    before = _files(store)
    st = S.OutputStore(store, {"lightmatch_extractor": "test"}).open()
    monkeypatch.setattr(h5, "put_features", _raiser(exc))
    with pytest.raises(OutputError) as info:
        st.commit({"b.png": _features()})
    message = str(info.value)
    assert "\n" not in message and str(st.parts_dir) in message and "cannot write results" in message
    assert not st.has_features("b.png") and list(st.parts_dir.iterdir()) == []
    st.close()
    assert _files(store) == before


@pytest.mark.parametrize("exc", ERRORS, ids=IDS)
def test_consolidation_write_error_keeps_store_and_parts(store: Path, monkeypatch, exc: BaseException) -> None:
    before = (store / "features.h5").read_bytes()
    st = S.OutputStore(store, {"lightmatch_extractor": "test"}).open()
    st.commit({"b.png": _features()})
    shards_before = len(list((store / "shards").glob("*.h5")))
    monkeypatch.setattr(shards, "_apply", _raiser(exc))
    with pytest.raises(OutputError) as info:
        st.finish()
    assert "\n" not in str(info.value) and str(store / "features.h5") in str(info.value)
    assert (store / "features.h5").read_bytes() == before
    assert len(list((store / "shards").glob("*.h5"))) == shards_before + 1  # the part's work is kept, as a shard
    assert not list(store.glob(".*.tmp")) and not (store / ".lightmatch.lock").exists()
    monkeypatch.undo()
    with S.OutputStore(store, {"lightmatch_extractor": "test"}) as st:  # the next run consolidates the part
        assert st.has_features("b.png")


@pytest.mark.parametrize("exc", ERRORS, ids=IDS)
def test_atomic_output_errors_leave_the_old_file(tmp_path: Path, monkeypatch, exc: BaseException) -> None:
    target = tmp_path / "pairs.txt"
    target.write_text("old\n")
    for where in ("block", "replace"):
        with pytest.raises(OutputError) as info:
            with atomic.atomic_output(target, "the pairs file") as tmp:
                tmp.write_text("new, half written")
                if where == "block":
                    raise exc
                monkeypatch.setattr(os, "replace", _raiser(exc))
        monkeypatch.undo()
        assert str(info.value).startswith(f"{target}: cannot write the pairs file (") and "\n" not in str(info.value)
        assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["pairs.txt"]


def test_atomic_output_fsyncs_the_folder_after_the_rename(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    replace, fsync_dir = os.replace, atomic.fsync_dir
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), replace(a, b)))
    monkeypatch.setattr(atomic, "fsync_dir", lambda folder: (calls.append(f"fsync {folder}"), fsync_dir(folder)))
    with atomic.atomic_output(tmp_path / "x.txt") as tmp:
        tmp.write_text("x")
    assert calls == ["replace", f"fsync {tmp_path}"]


@pytest.mark.parametrize("exc", ERRORS[:1] + ERRORS[4:5], ids=IDS[:1] + IDS[4:5])
def test_plots_are_written_atomically(tmp_path: Path, monkeypatch, exc: BaseException) -> None:
    from matplotlib.figure import Figure

    from lightmatch.viz import plot_latency

    plot = tmp_path / "latency.png"
    plot_latency([256, 512], {"full": [1.0, 2.0]}, plot)
    before = plot.read_bytes()
    assert before.startswith(b"\x89PNG")
    savefig = Figure.savefig

    def half_then_fail(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise exc

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    with pytest.raises(OutputError, match=f"{plot}: cannot write plot"):
        plot_latency([256, 512], {"full": [1.0, 3.0]}, plot)
    assert plot.read_bytes() == before and os.listdir(tmp_path) == ["latency.png"]
    monkeypatch.setattr(Figure, "savefig", savefig)
    plot_latency([256, 512], {"full": [1.0, 3.0]}, tmp_path / "latency.pdf")
    assert (tmp_path / "latency.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("exc", [ERRORS[0], ERRORS[4]], ids=["ENOSPC", "h5py-RuntimeError"])
def test_cli_match_write_error_is_one_line(tmp_path: Path, monkeypatch, exc: BaseException) -> None:
    """Through the command (ALIKED + LightGlue, the defaults): one line naming the file, exit 1, no temporary file,
    and an output folder the run created is not left behind empty."""
    out = tmp_path / "new" / "out"
    monkeypatch.setattr(h5, "put_matches", _raiser(exc))
    result = CliRunner().invoke(main, ["match", str(ASSETS / "sample0.jpg"), str(ASSETS / "sample1.jpg"), "-o",
                                       str(out), "--resize", "256", "--max-keypoints", "256"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cannot write results" in lines[0] and str(out / ".parts") in lines[0], lines
    assert not (tmp_path / "new").exists()


def test_batch_write_error_stops_with_one_line_and_keeps_finished_work(tmp_path: Path, monkeypatch) -> None:
    import cv2

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (160, 260), dtype=np.uint8), (0, 0), 2)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), texture[:, i * 20:i * 20 + 200])
    out = tmp_path / "out"
    args = ["match", "--image-dir", str(images), "--pairs-mode", "exhaustive", "-o", str(out), "--features", "sift",
            "--matcher", "nn", "--max-keypoints", "128", "-q"]
    calls = {"n": 0}
    put = h5.put_matches

    def fail_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return put(*a, **k)

    monkeypatch.setattr(h5, "put_matches", fail_second)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "No space left on device" in result.output.strip().splitlines()[-1]
    assert len(list((out / ".parts").glob("*-m.h5"))) == 1  # the pair written before the failure is kept
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    assert CliRunner().invoke(main, args).exit_code == 0  # the rerun finishes the rest
    with h5py.File(out / "matches.h5") as f:
        assert len(h5.match_groups(f)) == 3


def test_temporaries_of_killed_writes_are_swept_by_the_next_run(store: Path) -> None:
    """A run killed while replacing any file of the folder (a store, an evaluation's summary.json) leaves a hidden
    temporary; the next run on the folder removes it, and leaves files that are not ours alone."""
    left = [store / ".summary.json.k2j4_x9a.tmp", store / ".features.h5.abcdefgh.tmp",
            store / ".parts" / ".123-0000001-f.h5.tmp"]
    (store / ".parts").mkdir()
    for path in left:
        path.write_text("half")
    mine = [store / ".notes.tmp", store / "draft.tmp"]
    for path in mine:
        path.write_text("user's")
    with S.OutputStore(store, {"lightmatch_extractor": "test"}):
        pass
    assert not any(path.exists() for path in left) and all(path.exists() for path in mine)
