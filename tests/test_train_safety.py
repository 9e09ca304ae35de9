"""Files training reads back cannot run code: crafted pickles as a resume checkpoint, a feature-cache item or
``--init`` / ``--matcher-weights`` weights are refused with one line naming the file, and nothing they hold runs."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner
from helpers import make_images

from lightmatch.cli import main
from lightmatch.errors import InputError, WeightsError
from lightmatch.train import checkpoint
from lightmatch.weights import CHECKPOINT_FORMAT


class Evil:
    """Unpickling this creates ``marker`` (what an attacker's payload would do instead)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil(path, marker, how: str) -> None:
    if how == "torch":
        torch.save({"format": CHECKPOINT_FORMAT, "model": Evil(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(Evil(str(marker))))


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_crafted_cache_item_is_refused_without_running(tmp_path, how):
    marker, item = tmp_path / "pwned", tmp_path / "0.pt"
    write_evil(item, marker, how)
    with pytest.raises(InputError) as err:
        checkpoint.load_cache_item(item)
    assert str(item) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_cache_item_and_rng_round_trip(tmp_path):
    from lightmatch.types import Features

    f = Features(torch.rand(5, 2), torch.rand(5), torch.rand(5, 8), (32, 24), None, torch.rand(5))
    H = torch.eye(3, dtype=torch.float64).numpy()
    checkpoint.save_cache_item(tmp_path / "1.pt", f, f, H)
    f0, f1, H1 = checkpoint.load_cache_item(tmp_path / "1.pt")
    assert torch.equal(f0.descriptors, f.descriptors) and f1.image_size == (32, 24) and f1.scales is None
    assert (H1 == H).all()
    state = checkpoint.rng_state()
    checkpoint.save({"format": CHECKPOINT_FORMAT, "rng": state}, tmp_path / "c.pth", "checkpoint")
    a = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    checkpoint.set_rng_state(torch.load(tmp_path / "c.pth", weights_only=True)["rng"])
    b = (torch.rand(3), __import__("random").random(), __import__("numpy").random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    with pytest.raises(InputError, match="format"):  # a checkpoint is not a cache item
        checkpoint.load_cache_item(tmp_path / "c.pth")


def test_training_checkpoint_as_weights_says_what_to_pass(tmp_path):
    from lightmatch import weights

    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save({"format": CHECKPOINT_FORMAT, "model": {}}, run / "last.pth", "checkpoint")
    with pytest.raises(WeightsError) as err:
        weights.load_state_dict("aliked_lightglue", run / "last.pth")
    assert "matcher.pth" in str(err.value) and "--resume" in str(err.value)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    make_images(folder, 3, size=(160, 120))
    return folder


def tiny(images, out, *extra):
    return CliRunner().invoke(main, ["train", "--images", str(images), "-o", str(out), "--features", "sift",
                                     "--steps", "1", "--batch-size", "1", "--n-layers", "1", "--num-keypoints", "16",
                                     "--patch-size", "128x96", "--val-pairs", "1", "--device", "cpu", "-q", *extra])


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_crafted_last_pth_is_refused_on_resume(images, tmp_path, how):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"images": [str(images)], "features": "sift", "steps": 2}))
    write_evil(run / "last.pth", marker, how)
    result = CliRunner().invoke(main, ["train", "-o", str(run), "--resume", "-q"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(run / "last.pth") in lines[0] and "not a training checkpoint" in lines[0]
    assert not marker.exists()


def test_crafted_cache_files_are_refused_in_a_run(images, tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "pwned"
    first = tiny(images, tmp_path / "a", "--cache", str(cache))
    assert first.exit_code == 0, first.output
    items = sorted(cache.rglob("*.pt"))
    assert items
    for item in items:
        write_evil(item, marker, "torch")
    result = tiny(images, tmp_path / "b", "--cache", str(cache))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not a feature-cache file" in lines[0] and str(cache) in lines[0], result.output
    assert not marker.exists()
    # a run's checkpoint given as the initialisation says what to give instead
    init = tiny(images, tmp_path / "c", "--init", str(tmp_path / "a" / "last.pth"))
    assert init.exit_code == 1 and "matcher.pth" in init.output and "--resume" in init.output, init.output
