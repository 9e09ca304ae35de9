"""lightmatch.cli.reporter: batch events to JSON lines on stdout and warnings on stderr (no progress bar off a
terminal), each failure said once, and a reader of stdout that goes away."""

from __future__ import annotations

import json
import os

import pytest

from lightmatch.cli.reporter import Reporter
from lightmatch.pipeline.events import BatchStart, ImageEvent, PairEvent


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


class Bar:
    """Counts what the reporter's progress bar is advanced by (tqdm off a terminal counts nothing)."""

    disable = True

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def test_pair_run_prints_pairs_and_failed_images_only(capsys):
    reporter = Reporter(as_json=True, quiet=False, unit="pair")
    reporter(BatchStart(2, 2, 3, 3, removed=["out/features.h5"]))
    reporter.bar = Bar()
    reporter(ImageEvent("a.jpg", "extracted", keypoints=5))
    reporter(ImageEvent("b.jpg", "failed", error="b.jpg: not an image"))
    reporter(PairEvent("a.jpg", "b.jpg", "failed", error="b.jpg: not an image"))  # said once, for the image
    reporter(PairEvent("a.jpg", "c.jpg", "failed", error="no memory"))
    reporter(PairEvent("c.jpg", "a.jpg", "ok", matches=4, warnings=["few matches"]))
    reporter.close()
    out, err = capsys.readouterr()
    assert [(line["type"], line.get("image", line.get("image0")), line["status"]) for line in lines(out)] == [
        ("image", "b.jpg", "failed"), ("pair", "a.jpg", "failed"), ("pair", "a.jpg", "failed"),
        ("pair", "c.jpg", "ok")]
    assert err.splitlines() == ["lightmatch: warning: --overwrite: removed out/features.h5",
                                "lightmatch: warning: b.jpg: not an image (image skipped)",
                                "lightmatch: warning: pair a.jpg c.jpg failed: no memory",
                                "lightmatch: warning: few matches"]
    assert reporter.failed_images == {"b.jpg"} and reporter.bar.n == 3  # ok and failed pairs advance the bar


def test_image_run_prints_every_image(capsys):
    reporter = Reporter(as_json=True, quiet=True, unit="image")
    reporter(BatchStart(0, 0, 2, 2))
    assert reporter.bar.disable and reporter.bar.total == 2  # quiet: no bar drawn
    reporter.bar = Bar()
    reporter(ImageEvent("a.jpg", "extracted", keypoints=5))
    reporter(ImageEvent("b.jpg", "skipped"))
    reporter.emit({"type": "summary"})
    out, err = capsys.readouterr()
    assert lines(out) == [{"type": "image", "image": "a.jpg", "status": "extracted", "keypoints": 5},
                          {"type": "image", "image": "b.jpg", "status": "skipped"}, {"type": "summary"}]
    assert err == "" and reporter.bar.n == 1  # skipped images are not work done


def test_without_json_stdout_stays_empty(capsys):
    reporter = Reporter(as_json=False, quiet=False, unit="pair")
    reporter(BatchStart(1, 1, 2, 2))
    reporter(PairEvent("a.jpg", "b.jpg", "ok", matches=3))
    reporter.emit({"type": "summary"})
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_close_before_start_is_harmless():
    Reporter(as_json=False, quiet=True, unit="pair").close()


class GoneStdout:
    """A stdout whose reader went away (``| head``); its descriptor is a file of ours, so the dup2 is harmless."""

    def __init__(self, fd: int) -> None:
        self.fd, self.writes = fd, 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd


@pytest.mark.skipif(not os.path.exists(os.devnull), reason="needs a null device")
def test_a_closed_stdout_stops_the_lines_not_the_run(tmp_path):
    fd = os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT)
    try:
        reporter = Reporter(as_json=True, quiet=True, unit="pair")
        reporter.stdout = GoneStdout(fd)
        reporter.emit({"type": "pair"})
        reporter.emit({"type": "pair"})
        assert not reporter.stdout_open and reporter.stdout.writes == 1  # tried once, then quiet
        os.write(fd, b"later output")  # now goes to the null device
        assert (tmp_path / "stdout").read_bytes() == b""
    finally:
        os.close(fd)
