"""``--executor ray``: the same files and pair lines as the local executor, on a two-node Ray cluster started
here on 127.0.0.1 as separate processes (`ray start --head` and `ray start --address`, each node with its own
temporary folder and CPUs), whose workers cannot see the image and output folders (no shared file system); a
worker killed mid-run, the worker node killed mid-run, a driver killed and resumed, a bad image, ALIKED + LightGlue
within the stated tolerance, a weights file only on the driver, and the one-line error without Ray installed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import (
    LIGHTMATCH,
    assert_one_line_error,
    assert_same_stores,
    assert_store_invariant,
    invoke,
    json_lines,
    make_images,
    run,
    store_contents,
    store_differences,
)

from lightmatch.pipeline.plan import viz_filename
from lightmatch.pipeline.ray_executor import EMBEDDED_ENV

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process tree")

DATA = Path(os.environ.get("LIGHTMATCH_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
            ) / "freiburg_sequence"
ARGS = ("--pairs-mode sequential --window 2 --features sift --matcher nn --max-keypoints 256 --resize 320 "
        "--verify homography --seed 3")
OBJECT_STORE = 100 * 1024 ** 2


# ------------------------------------------------------------------------------------------------ helpers ---

def children() -> dict[int, list[int]]:
    """Process tree of this machine: pid -> child pids."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def ray_workers(root: int) -> list[int]:
    """Pids of lightmatch's Ray worker actors below process ``root`` (the cluster this test started)."""
    tree, found, todo = children(), [], [root]
    while todo:
        for pid in tree.get(todo.pop(), []):
            todo.append(pid)
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::Worker"):
                    found.append(pid)
            except OSError:
                pass
    return found


def parts(out: Path, kind: str) -> int:
    folder = out / ".parts"
    return len(list(folder.glob(f"*-{kind}.h5"))) if folder.is_dir() else 0


def wait_until(process: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
    """Poll ``condition()`` until true (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the run made no progress")


def pair_lines(stdout: str) -> list[str]:
    """JSON pair and image lines without their timings, sorted (a Ray run reports them as chunks complete)."""
    lines = []
    for obj in json_lines(stdout):
        if obj["type"] != "summary":
            obj.pop("time_ms", None)
            obj.pop("timings_ms", None)
            lines.append(json.dumps(obj, sort_keys=True))
    return sorted(lines)


# ---------------------------------------------------------------------------------------------- fixtures ---

# Every Python process of the test cluster runs this first: it hides the image and output folders of the tests
# (``LM_TEST_HIDDEN``), as on a cluster without a shared file system.
HIDE_FOLDERS = """
import os, sys
_hidden = tuple(p for p in os.environ.get("LM_TEST_HIDDEN", "").split(os.pathsep) if p)
def _hide(event, args):
    path = args[0] if args and isinstance(args[0], (str, bytes, os.PathLike)) else None
    watched = event in ("open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove")
    if watched and path is not None and os.path.abspath(os.fsdecode(path)).startswith(_hidden):
        raise FileNotFoundError(2, "hidden from the Ray workers", os.fsdecode(args[0]))
if _hidden:
    sys.addaudithook(_hide)
"""


def start_node(ray_cli: Path, temp: str, args: list[str], env: dict) -> subprocess.Popen:
    """``ray start --block`` with its own temporary folder ``temp``; returns once the node runs."""
    log = Path(temp) / "start.log"
    with open(log, "w") as out:
        node = subprocess.Popen([str(ray_cli), "start", "--block", "--node-ip-address", "127.0.0.1",
                                 "--object-store-memory", str(OBJECT_STORE), "--disable-usage-stats",
                                 "--temp-dir", temp, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    started = wait_until(node, lambda: "runtime started" in log.read_text(), 90)
    assert started, log.read_text()[-2000:]
    return node


def kill_tree(root: int) -> None:
    """SIGKILL process ``root``, all its descendants and its process group (the pids are taken first, so that
    orphans are not missed)."""
    tree, pids, todo = children(), [root], [root]
    while todo:
        found = tree.get(todo.pop(), [])
        pids += found
        todo += found
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(root, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Cluster:
    """A two-node Ray cluster on 127.0.0.1, each node with its own temporary folder: the head (2 CPUs) and a
    worker node (1 CPU). ``address``; ``head`` and ``node``: the pids of their ``ray start`` processes (``node``
    None while the worker node is down)."""

    def __init__(self, hidden: list[Path]) -> None:
        self.ray_cli = Path(sys.executable).parent / "ray"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        own = Path(tempfile.mkdtemp(prefix="lm-ray-"))  # the hook, and the temporary files of the workers
        (own / "sitecustomize.py").write_text(HIDE_FOLDERS)
        (own / "tmp").mkdir()
        self.folders = [own]
        # not RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps Ray on 127.0.0.1 only): it refuses a second node
        self.env = {**{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
                    **EMBEDDED_ENV,  # no usage reports, no cloud metadata lookups
                    "RAY_AUTH_MODE": "disabled",  # a loopback-only test cluster needs no token
                    # the killed worker node is declared dead (and its actors restarted elsewhere) after 3 failed
                    # health checks 1 s apart, instead of Ray's 5 checks 3 s apart: up to 15 s of the node-loss test
                    # spent waiting. Each check still waits Ray's 10 s for an answer, so a node alive but slow on a
                    # busy machine is not declared dead.
                    "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3",
                    "TMPDIR": str(own / "tmp"),  # what a worker killed mid-chunk leaves, removed with the cluster
                    "PYTHONPATH": os.pathsep.join([str(own), *filter(None, [os.environ.get("PYTHONPATH")])]),
                    "LM_TEST_HIDDEN": os.pathsep.join(str(p) for p in hidden)}
        self.processes: list[subprocess.Popen] = []
        self.node: int | None = None
        try:
            self.head = self._start(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard",
                                     "false"])
            self.node = self.start_node()
        except BaseException:
            self.stop()
            raise

    def _start(self, args: list[str]) -> int:
        temp = tempfile.mkdtemp(prefix="lm-ray-")  # short: Ray's socket paths live below it
        self.folders.append(Path(temp))
        node = start_node(self.ray_cli, temp, args, self.env)
        self.processes.append(node)
        return node.pid

    def start_node(self) -> int:
        """Start (again) the worker node; returns the pid of its ``ray start``."""
        self.node = self._start(["--address", self.address, "--num-cpus", "1"])
        return self.node

    def stop(self) -> None:
        for process in self.processes:  # all nodes at once: each stops in its own time
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
            kill_tree(process.pid)  # whatever of it is left
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, shared_data):
    """The two-node :class:`Cluster`, whose workers cannot see the shared data nor the tests' folders; stopped
    (every process it started) at the end."""
    pytest.importorskip("ray")
    started = Cluster([shared_data, tmp_path_factory.getbasetemp()])
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def cluster(ray_cluster):
    """:func:`ray_cluster` with both nodes running: a test that kills the worker node sets ``node`` to None, and
    the node starts again only for a test after it (the node-loss test runs last)."""
    if ray_cluster.node is None:
        ray_cluster.start_node()
    return ray_cluster


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data):
    """The local executor's stores and JSON lines for the sequential pairs of freiburg_sequence."""
    assert DATA == shared_data / "freiburg_sequence" and DATA.is_dir()
    out = tmp_path_factory.mktemp("ray") / "local"
    proc = invoke("match", "--image-dir", DATA, *shlex.split(ARGS), "-o", out, "--json", "-q")
    return out, pair_lines(proc.stdout)


def ray_args(address: str, out: Path) -> list[str]:
    return [str(LIGHTMATCH), "match", "--image-dir", str(DATA), *shlex.split(ARGS), "-o", str(out), "--json", "-q",
            "--executor", "ray", "--ray-address", address, "--ray-workers", "2"]


# ------------------------------------------------------------------------------------------------- tests ---

def test_without_ray_one_line_error_names_the_extra(tmp_path, monkeypatch):
    """Ray not importable (``sys.modules['ray'] = None`` makes ``import ray`` raise ImportError, as without the
    extra): extract and match stop with one line naming the extra and exit code 2 (in this process: the exit code
    and stderr are the console script's, and no process boundary is at stake)."""
    make_images(tmp_path / "imgs", 2)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)
        for args in (["extract", tmp_path / "imgs"], ["match", "--image-dir", tmp_path / "imgs", "--pairs-mode",
                                                       "exhaustive"]):
            proc = invoke(*args, "-o", tmp_path / "out", "--executor", "ray", check_code=2)
            assert_one_line_error(proc, '"lightmatch[ray]"')
    assert not (tmp_path / "out").exists()
    proc = invoke("extract", tmp_path / "imgs", "-o", tmp_path / "out", "--ray-workers", "2", check_code=2)
    assert "--ray-workers needs --executor ray" in proc.stderr


@pytest.mark.slow
def test_ray_equals_local(cluster, reference, tmp_path):
    ref, ref_lines = reference
    proc = subprocess.run(ray_args(cluster.address, tmp_path / "ray"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_stores(ref, tmp_path / "ray")
    assert_store_invariant(tmp_path / "ray")
    assert pair_lines(proc.stdout) == ref_lines
    summary = json_lines(proc.stdout)[-1]
    assert summary["executor"] == "ray" and sorted(summary["per_worker"]) == ["worker-0", "worker-1"]
    assert sum(w["pairs"] for w in summary["per_worker"].values()) == summary["pairs_matched"] == len(ref_lines)
    assert all(w["pairs"] > 0 for w in summary["per_worker"].values())  # both nodes worked


@pytest.mark.slow
def test_worker_killed_mid_run_is_replaced(cluster, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMATCH_STORE_CHUNK", "1")  # the driver seals a part per image and pair: progress shows
    out = tmp_path / "ray"
    process = subprocess.Popen(ray_args(cluster.address, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    killed = []
    for kind, count in (("f", 2), ("m", 1)):  # once while extracting, once while matching
        if wait_until(process, lambda: parts(out, kind) >= count and ray_workers(cluster.head)):
            victim = ray_workers(cluster.head)[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert killed, "the run ended before a worker could be killed"
    assert_same_stores(reference[0], out)
    assert_store_invariant(out)
    assert pair_lines(stdout) == reference[1]  # no pair lost or reported twice


@pytest.mark.slow
def test_driver_killed_then_resumed(cluster, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMATCH_STORE_CHUNK", "1")
    out = tmp_path / "ray"
    process = subprocess.Popen(ray_args(cluster.address, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    assert wait_until(process, lambda: parts(out, "f") >= 4), "the run ended before it could be killed"
    process.kill()
    process.wait()
    assert parts(out, "f") >= 4 and not (out / "matches.h5").exists()  # killed mid-run
    proc = subprocess.run(ray_args(cluster.address, out), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json_lines(proc.stdout)[-1]
    assert summary["images_reused"] >= 4 and summary["images_extracted"] == summary["images_total"] - \
        summary["images_reused"]
    assert_same_stores(reference[0], out)
    assert_store_invariant(out)


@pytest.mark.slow
def test_bad_image_fails_only_its_pairs_and_extract(cluster, tmp_path):
    make_images(tmp_path / "imgs", 4, size=(160, 120))
    (tmp_path / "imgs" / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    common = ["--image-dir", tmp_path / "imgs", "--pairs-mode", "sequential", "--window", "2", "--features", "sift",
              "--matcher", "nn", "--json", "-q"]
    ray = ["--executor", "ray", "--ray-address", cluster.address, "--ray-workers", "2"]
    local = invoke("match", *common, "-o", tmp_path / "local", check_code=3)
    remote = run("match", *common, "-o", tmp_path / "ray", *ray, check_code=3)
    assert pair_lines(remote.stdout) == pair_lines(local.stdout)
    failed = [o for o in json_lines(remote.stdout) if o["type"] == "pair" and o["status"] == "failed"]
    assert sorted((o["image0"], o["image1"]) for o in failed) == [("img00.png", "img01.png"),
                                                                   ("img01.png", "img02.png"),
                                                                   ("img01.png", "img03.png")]
    assert_same_stores(tmp_path / "local", tmp_path / "ray")
    run("extract", tmp_path / "imgs", "-o", tmp_path / "extract", "--features", "sift", "-q", *ray, check_code=3)
    assert_same_stores_features(tmp_path / "local", tmp_path / "extract")


def assert_same_stores_features(a: Path, b: Path) -> None:
    """Only ``features.h5``, dataset by dataset (an extract run writes no matches)."""
    ca, cb = store_contents(a / "features.h5"), store_contents(b / "features.h5")
    assert ca.keys() == cb.keys()
    for key in ca:
        assert ca[key] == cb[key] if key == "@attrs" else np.array_equal(ca[key], cb[key]), key


@pytest.mark.slow
def test_batch_pairs_under_ray_equals_local(cluster, tmp_path):
    """--batch-pairs 4 with ALIKED + LightGlue on the two-node cluster (2 workers): the same files as the local run.
    The groups matched together are the local run's (padded scores differ from one by one's in their last bits, so
    a worker that matched its pairs one by one would fail this). (An embedded Ray runs the same executor: the
    network guard's test starts one.)"""
    from lightmatch.cli import main

    names = sorted(p.name for p in DATA.glob("*.png"))[:9]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{a} {b}\n" for i, a in enumerate(names) for b in names[i + 1:i + 3]))
    common = ["match", "--image-dir", str(DATA), "--pairs", str(pairs), "--max-keypoints", "256", "--resize", "256",
              "--batch-pairs", "4", "-q"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker runs (one CPU each): other thread counts change the last bits
    try:
        local = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "local")], catch_exceptions=False)
        one = CliRunner().invoke(main, [*common[:-3], "-q", "-o", str(tmp_path / "one")], catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0 and one.exit_code == 0, local.output + one.output
    run(*common, "-o", tmp_path / "ray", "--executor", "ray", "--ray-address", cluster.address, "--ray-workers", "2")
    assert_same_stores(tmp_path / "local", tmp_path / "ray")
    assert_store_invariant(tmp_path / "ray")
    with pytest.raises(AssertionError, match="matching_scores0"):
        assert_same_stores(tmp_path / "local", tmp_path / "one")


KEYPOINT_TOLERANCE_PX = 1e-3  # README "Run on a Ray cluster": Ray against local with ALIKED + LightGlue
IDENTICAL_MATCHES = 0.99


@pytest.mark.slow
def test_default_models_within_the_stated_tolerance(cluster, tmp_path):
    """ALIKED + LightGlue on the two-node cluster against a local run with torch's default threads (the workers run
    one thread each): keypoints within :data:`KEYPOINT_TOLERANCE_PX`, at least :data:`IDENTICAL_MATCHES` of the
    matches identical, the same settings and pairs; with --viz-dir, the plots come back to the driver."""
    names = sorted(p.name for p in DATA.glob("*.png"))[:4]  # 5 pairs, ~1500 matches: 1% is ~15 of them
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{a} {b}\n" for i, a in enumerate(names) for b in names[i + 1:i + 3]))
    common = ["match", "--image-dir", DATA, "--pairs", pairs, "--max-keypoints", "512", "--resize", "512", "-q"]
    invoke(*common, "-o", tmp_path / "local")
    run(*common, "-o", tmp_path / "ray", "--viz-dir", tmp_path / "viz", "--executor", "ray", "--ray-address",
        cluster.address, "--ray-workers", "2")
    keypoints_px, identical = store_differences(tmp_path / "local", tmp_path / "ray")
    assert keypoints_px <= KEYPOINT_TOLERANCE_PX and identical >= IDENTICAL_MATCHES, (keypoints_px, identical)
    assert store_contents(tmp_path / "local" / "matches.h5")["@attrs"] == \
        store_contents(tmp_path / "ray" / "matches.h5")["@attrs"]
    assert_store_invariant(tmp_path / "ray")
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == sorted(
        viz_filename(a, b) for a, b in (line.split() for line in pairs.read_text().splitlines()))


@pytest.mark.slow
def test_file_only_on_the_driver_one_line_error(cluster, tmp_path):
    """Model files are not sent to the workers: a --weights file that only the driver's machine has stops the run
    at once with a one-line error naming it (the images and the output folder need no such care)."""
    from lightmatch import weights

    shutil.copy(weights.resolve("aliked-n16"), tmp_path / "aliked-n16.pth")
    make_images(tmp_path / "imgs", 3, size=(160, 120))
    proc = run("match", "--image-dir", tmp_path / "imgs", "--pairs-mode", "exhaustive", "--weights",
               tmp_path / "aliked-n16.pth", "-o", tmp_path / "out", "--executor", "ray", "--ray-address",
               cluster.address, "--ray-workers", "2", check_code=None)
    assert_one_line_error(proc, "a Ray worker could not load its models", str(tmp_path / "aliked-n16.pth"))
    assert proc.returncode == 2


@pytest.mark.slow
def test_worker_node_lost_mid_run(cluster, reference, tmp_path, monkeypatch):
    """The worker node killed (its `ray start`, raylet and workers) while the run extracts: Ray restarts its worker
    on the head and the chunks it held are redone; the run completes with the local run's files and lines. Last in
    this file, so that no test waits for the node to start again."""
    monkeypatch.setenv("LIGHTMATCH_STORE_CHUNK", "1")
    out = tmp_path / "ray"
    process = subprocess.Popen(ray_args(cluster.address, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert wait_until(process, lambda: parts(out, "f") >= 2 and ray_workers(cluster.node)), \
            "the run ended before the node could be killed"
        kill_tree(cluster.node)
        cluster.node = None  # started again only for a test after this one (the fixture `cluster`)
        assert not (out / "matches.h5").exists() and parts(out, "m") == 0  # mid-run: no pair matched yet
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert_same_stores(reference[0], out)
    assert_store_invariant(out)
    assert pair_lines(stdout) == reference[1]
