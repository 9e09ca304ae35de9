"""No network at run time and nothing written outside the folders named: ``match`` runs with each backend and
executor (torch, OpenVINO, Ray) under a guard, a ``sitecustomize`` audit hook inherited by every Python process of
the run (Ray's workers included), that records and refuses any connection to a non-loopback address and any name
lookup of a non-local name; with a fresh empty HOME, which must stay empty, and no Ray session folder left."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
LIGHTMATCH = Path(sys.executable).parent / "lightmatch"

GUARD = r'''
import ipaddress, json, os, socket, sys

_LOG = os.environ["LIGHTMATCH_NET_GUARD_LOG"]
_LOCAL = {"localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname()}


def _local(host):
    if host is None or isinstance(host, (bytes, bytearray)) and not host:
        return True
    host = host.decode() if isinstance(host, (bytes, bytearray)) else str(host)
    if host in ("", "0.0.0.0", "::") or host.split("%")[0] in _LOCAL:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1] if event != "socket.sendmsg" else args[1]
        if not isinstance(address, tuple) or _local(address[0]):
            return  # a unix socket, or loopback
        host = address[0]
    elif event == "socket.getaddrinfo":
        host = args[0]
        if _local(host):
            return
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
        if _local(host):
            return
    else:
        return
    with open(_LOG, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "event": event, "host": str(host), "argv": sys.argv[:3]}) + "\n")
    raise ConnectionRefusedError(f"network guard: {event} {host}")


sys.addaudithook(_guard)
'''


def _run(args: list[str], tmp_path: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[dict]]:
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "violations.jsonl"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    pythonpath = os.pathsep.join([str(guard), *filter(None, [os.environ.get("PYTHONPATH")]), str(REPO)])
    env = {**os.environ, "PYTHONPATH": pythonpath, "HOME": str(home), "LIGHTMATCH_NET_GUARD_LOG": str(log),
           "TMPDIR": str(tmp_path / "tmpdir")}
    for key in ("RAY_USAGE_STATS_ENABLED", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "LIGHTMATCH_CACHE_DIR",
                "MPLCONFIGDIR"):
        env.pop(key, None)
    (tmp_path / "tmpdir").mkdir(exist_ok=True)
    proc = subprocess.run([str(LIGHTMATCH), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tmp_path)
    violations = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, violations


def test_the_guard_catches_a_lookup(tmp_path: Path) -> None:
    """The guard itself works: a lookup of a public name is recorded and refused, loopback is not."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "violations.jsonl"
    code = ("import socket\ntry:\n    socket.getaddrinfo('example.com', 443)\nexcept OSError as e:\n    print(e)\n"
            "socket.getaddrinfo('127.0.0.1', 80)\ns = socket.socket()\ntry:\n    s.connect(('192.0.2.1', 80))\n"
            "except OSError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(guard), "LIGHTMATCH_NET_GUARD_LOG": str(log)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.count("network guard") == 2, out.stdout + out.stderr
    assert [json.loads(line)["host"] for line in log.read_text().splitlines()] == ["example.com", "192.0.2.1"]


def _ray_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("lm-ray-*")} | ({"ray"} if Path("/tmp/ray").exists() else set())


@pytest.mark.parametrize("backend", ["torch", "openvino", "ray"])
def test_match_talks_to_nobody_and_writes_nowhere_else(tmp_path: Path, backend: str) -> None:
    args = ["--resize", "256", "--max-keypoints", "256", "--json"]
    if backend == "openvino":
        pytest.importorskip("openvino")
        args += ["--features", "disk", "--backend", "openvino"]
    if backend == "ray":
        pytest.importorskip("ray")
        images = tmp_path / "imgs"
        images.mkdir()
        for name in ("sample0.jpg", "sample1.jpg"):
            shutil.copy(ASSETS / name, images / name)
        args = ["match", "--image-dir", images, "--pairs-mode", "exhaustive", "-o", tmp_path / "out", "--executor",
                "ray", "--ray-workers", "1", *args]
    else:
        args = ["match", ASSETS / "sample0.jpg", ASSETS / "sample1.jpg", "-o", tmp_path / "out", "--viz",
                tmp_path / "out" / "matches.png", *args]
    before = _ray_dirs()
    proc, violations = _run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert violations == [], json.dumps(violations, indent=1)
    assert (tmp_path / "out" / "matches.h5").is_file()
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "home").rglob("*")) == []  # no ~/intel, ~/.ray
    assert list((tmp_path / "tmpdir").iterdir()) == []
    assert _ray_dirs() <= before  # the embedded Ray's session folder is gone, and /tmp/ray was not made
    assert socket.gethostname()  # (the guard allowed lookups of this machine's own name)
