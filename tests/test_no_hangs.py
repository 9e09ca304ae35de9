"""No hangs: a FIFO given as an image, pairs or homography file is refused by its stat (never opened), GPUs a worker
cannot have are refused before the output folder is locked, and a huge sequential window costs no more than the
images allow."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightmatch.cli import main
from lightmatch.io.pairs import sequential_pairs

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture
def make_fifo():
    """Makes FIFOs; should anything block opening one, a writer opens and closes it after a few seconds, so the
    test fails (the reader sees an empty file) instead of hanging."""
    stop = threading.Event()
    threads = []

    def make(path: Path) -> Path:
        os.mkfifo(path)

        def unblock() -> None:
            if not stop.wait(10):
                fd = os.open(path, os.O_RDWR)  # unblocks a reader stuck in open(); it then reads an empty file
                os.close(fd)

        threads.append(threading.Thread(target=unblock, daemon=True))
        threads[-1].start()
        return path

    yield make
    stop.set()
    for thread in threads:
        thread.join()


@pytest.fixture
def fifo(tmp_path: Path, make_fifo) -> Path:
    return make_fifo(tmp_path / "pipe.png")


def _refused(args: list[str], fifo: Path, code: int = 1, input: str | None = None) -> None:
    start = time.monotonic()
    result = CliRunner().invoke(main, args, input=input)
    err = result.output.strip()
    assert result.exit_code == code, err
    assert f"{fifo}: is a FIFO" in err and "Traceback" not in err, err
    assert time.monotonic() - start < 10


def test_fifo_image_is_refused(fifo: Path, tmp_path: Path) -> None:
    _refused(["match", str(ASSETS / "sample0.jpg"), str(fifo), "-o", str(tmp_path / "out"), "--resize", "256"],
             fifo)
    assert not (tmp_path / "out").exists()


def test_fifo_pairs_and_homography_files_are_refused(fifo: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    _refused(["match", "--image-dir", str(images), "--pairs", str(fifo), "-o", str(tmp_path / "out"),
              "--features", "sift", "--matcher", "nn"], fifo)
    _refused(["match", str(ASSETS / "sample0.jpg"), str(ASSETS / "sample1.jpg"), "--homography", str(fifo)], fifo)
    _refused(["eval", "pose", str(fifo), str(images), "--features", "sift", "--matcher", "nn"], fifo)
    _refused(["export", "colmap", "--image-dir", str(images), "--features", str(fifo), "--matches", str(fifo),
              "--database", str(tmp_path / "db.db")], fifo)
    gt = tmp_path / "pairs_with_gt.txt"
    gt.write_text("a.png b.png 0 0 " + " ".join(["500 0 320 0 500 240 0 0 1"] * 2) + " " +
                  " ".join(map(str, [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])) + "\n")
    _refused(["eval", "pose", str(gt), str(images), "--features-h5", str(fifo), "--matches-h5",
              str(fifo)], fifo)
    (tmp_path / "out").mkdir()
    os.symlink(fifo, tmp_path / "out" / "features.h5")  # an output store that is not a file
    _refused(["extract", str(images), "-o", str(tmp_path / "out"), "--features", "sift"], fifo.parent / "out" /
             "features.h5")
    (tmp_path / "out" / "features.h5").unlink()
    (tmp_path / "out").rmdir()
    assert not (tmp_path / "out").exists() and not (tmp_path / "db.db").exists()


def test_fifo_in_a_pairs_list_fails_that_image_only(make_fifo, tmp_path: Path) -> None:
    """A batch naming a FIFO as an image: that image's pairs fail (exit 3), the others are matched."""
    import shutil

    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("sample0.jpg", "sample1.jpg"):
        shutil.copy(ASSETS / name, images / name)
    make_fifo(images / "pipe.png")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("sample0.jpg sample1.jpg\nsample0.jpg pipe.png\n")
    start = time.monotonic()
    result = CliRunner().invoke(main, ["match", "--image-dir", str(images), "--pairs", str(pairs), "-o",
                                       str(tmp_path / "out"), "--features", "sift", "--matcher", "nn",
                                       "--max-keypoints", "128", "--resize", "256", "-q"])
    assert result.exit_code == 3, result.output
    assert "is a FIFO" in result.output and time.monotonic() - start < 10


def test_worker_gpus_beyond_the_machine_are_refused_before_the_lock(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("ray")
    from lightmatch.errors import ConfigError
    from lightmatch.pipeline import ray_executor as R

    with pytest.raises(ConfigError, match="--worker-gpus 1: this machine has 0 GPU"):
        R.check_resources(R.RayOptions(gpus=1), gpus_here=0)
    with pytest.raises(ConfigError, match="need 3 GPUs; this machine has 2"):
        R.check_resources(R.RayOptions(workers=6, gpus=0.5), gpus_here=2)
    R.check_resources(R.RayOptions(workers=4, gpus=0.5), gpus_here=2)
    R.check_resources(R.RayOptions(address="host:1", gpus=8), gpus_here=0)  # a cluster: checked once connected

    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    images = tmp_path / "imgs"
    images.mkdir()
    out = tmp_path / "out"
    start = time.monotonic()
    result = CliRunner().invoke(main, ["match", "--image-dir", str(images), "--pairs-mode", "exhaustive", "-o",
                                       str(out), "--executor", "ray", "--worker-gpus", "1"])
    assert result.exit_code == 2 and "--worker-gpus 1" in result.output, result.output
    assert not out.exists() and time.monotonic() - start < 30


def test_huge_window_with_loop_is_bounded_by_the_images() -> None:
    names = [f"{i:03d}.png" for i in range(50)]
    start = time.monotonic()
    huge = sequential_pairs(names, 10 ** 15, loop=True)
    assert time.monotonic() - start < 1
    assert huge == sequential_pairs(names, 49, loop=True) and len(huge) == 50 * 49 // 2
    for window in (1, 3, 48, 49, 50):
        for loop in (False, True):
            pairs = sequential_pairs(names, window, loop)
            assert len(pairs) == len({frozenset(p) for p in pairs})
    result = CliRunner().invoke(main, ["pairs", str(ASSETS), "--mode", "sequential", "--window", "9" * 30, "--loop"])
    assert result.exit_code == 0 and len(result.output.splitlines()) >= 1
