"""Weights download against a local HTTP server: good and bad checksums, a transfer cut short, Ctrl-C, offline,
HTTP errors: no partial file is ever left; and the listing of known weights."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import socket
import threading
from pathlib import Path

import pytest
import torch
from helpers import invoke

from lightmatch import weights
from lightmatch.errors import WeightsError
from lightmatch.models.superpoint import SuperPoint
from lightmatch.weights_download import download, list_weights

PAYLOAD = bytes(range(256)) * 1000  # 256 kB: several blocks


def _checkpoint_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save(SuperPoint(pretrained=False).state_dict(), buf)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        if self.path == "/short":  # announces the whole file, sends a third, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    _Handler.files = {"/good.pth": PAYLOAD, "/superpoint_v1.pth": _checkpoint_bytes()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTMATCH_WEIGHTS_DIR", raising=False)
    return tmp_path / "cache"


def register(monkeypatch, url: str, sha256: str | None, name: str = "superpoint") -> None:
    spec = dataclasses.replace(weights.REGISTRY[name], url=url, sha256=sha256, git_sha1=None)
    monkeypatch.setitem(weights.REGISTRY, name, spec)


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_checksum(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/good.pth", hashlib.sha256(PAYLOAD).hexdigest())
    calls = []
    path = download("superpoint", progress=lambda done, total: calls.append((done, total)))
    assert path == cache / "superpoint_v1.pth" and path.read_bytes() == PAYLOAD
    assert listing(cache) == ["superpoint_v1.pth"]  # no temporary left
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))

    # present and valid: not fetched again, unless forced
    _Handler.hits.clear()
    assert download("superpoint") == path and _Handler.hits == []
    download("superpoint", force=True)
    assert _Handler.hits == ["/good.pth"]


def test_bad_checksum_leaves_nothing(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/good.pth", "0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch") as err:
        download("superpoint")
    assert "\n" not in str(err.value)
    assert listing(cache) == []


def test_bad_existing_file_is_replaced(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/good.pth", hashlib.sha256(PAYLOAD).hexdigest())
    cache.mkdir(parents=True)
    (cache / "superpoint_v1.pth").write_bytes(b"truncated")
    assert download("superpoint").read_bytes() == PAYLOAD


def test_interrupted_transfer_leaves_nothing(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/short", None)  # no checksum: the length check alone must catch it
    with pytest.raises(WeightsError, match="interrupted after") as err:
        download("superpoint", trust_unverified=True)
    assert "\n" not in str(err.value)
    assert listing(cache) == []


def test_ctrl_c_during_transfer_leaves_nothing(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/good.pth", hashlib.sha256(PAYLOAD).hexdigest())

    def interrupt(done: int, total: int | None) -> None:
        if done > 100_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download("superpoint", progress=interrupt)
    assert listing(cache) == []


def test_offline_message(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    register(monkeypatch, f"http://127.0.0.1:{port}/superpoint_v1.pth", None)
    with pytest.raises(WeightsError) as err:
        download("superpoint", timeout=5, trust_unverified=True)
    message = str(err.value)
    assert "\n" not in message
    assert "offline" in message and "--weights PATH" in message and "$LIGHTMATCH_WEIGHTS_DIR" in message
    assert str(cache / "superpoint_v1.pth") in message
    assert listing(cache) == []


def test_http_error(server, cache, monkeypatch):
    register(monkeypatch, f"{server}/missing.pth", None)
    with pytest.raises(WeightsError, match="HTTP 404"):
        download("superpoint", trust_unverified=True)
    assert listing(cache) == []


def test_unwritable_folder(server, tmp_path, monkeypatch):
    register(monkeypatch, f"{server}/good.pth", None)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WeightsError, match="cannot write"):
        download("superpoint", dest_dir=blocker / "sub", trust_unverified=True)


def test_unknown_name(cache):
    with pytest.raises(WeightsError, match="unknown weights 'nope'"):
        download("nope")


def test_url_override_and_dest_dir(server, tmp_path, cache, monkeypatch):
    register(monkeypatch, "http://example.invalid/never-used", hashlib.sha256(PAYLOAD).hexdigest())
    path = download("superpoint", dest_dir=tmp_path / "elsewhere", url=f"{server}/good.pth")
    assert path == tmp_path / "elsewhere" / "superpoint_v1.pth" and path.read_bytes() == PAYLOAD
    assert listing(cache) == []


def test_downloaded_checkpoint_loads(server, cache, monkeypatch):
    body = _Handler.files["/superpoint_v1.pth"]
    register(monkeypatch, f"{server}/superpoint_v1.pth", hashlib.sha256(body).hexdigest())
    with pytest.raises(WeightsError, match="lightmatch weights download superpoint"):
        SuperPoint.from_weights()
    download("superpoint")
    model = SuperPoint.from_weights()  # found in the cache and checksum-verified
    assert isinstance(model, SuperPoint)


def test_list_weights(cache, tmp_path, monkeypatch):
    rows = {row["name"]: row for row in list_weights()}
    assert set(rows) == set(weights.REGISTRY)
    sp = rows["superpoint"]
    assert sp["available"] is False and sp["size"] is None and sp["source"] is None
    assert sp["path"] == str(cache / "superpoint_v1.pth")
    assert "non-commercial" in sp["licence"] and sp["description"]
    for row in rows.values():
        assert {"name", "available", "path", "size", "licence", "description"} <= set(row)

    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "superglue_outdoor.pth").write_bytes(b"x" * 123)
    monkeypatch.setenv("LIGHTMATCH_WEIGHTS_DIR", str(manual))
    sg = {row["name"]: row for row in list_weights()}["superglue_outdoor"]
    assert sg["available"] is True and sg["size"] == 123 and sg["source"] == "$LIGHTMATCH_WEIGHTS_DIR"
    assert sg["path"] == str(manual / "superglue_outdoor.pth")


def test_cli_weights_list_and_download(server, cache, tmp_path):
    """`lightmatch weights` (in-process): the listing shows shipped files; download --url fetches into the cache."""
    import json

    out = invoke("weights", "list", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.stdout.splitlines())}
    assert rows["aliked_lightglue"]["available"] and rows["aliked_lightglue"]["licence"] == "Apache-2.0"
    assert not rows["superpoint"]["available"] and "Magic Leap" in rows["superpoint"]["licence"]
    text = invoke("weights", "list").stdout
    assert "superglue_outdoor" in text and "xfeat_lighterglue" in text
    # superpoint has a known git blob id: another file from any URL is refused, nothing is kept
    done = invoke("weights", "download", "superpoint", "--url", f"{server}/good.pth", check_code=None)
    assert done.returncode == 1 and "non-commercial" in done.stderr
    assert "checksum mismatch" in done.stderr and "git blob id" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "cache" / "superpoint_v1.pth").exists()
    # sift_lightglue has no known digest: refused unless --sha256 or --trust-unverified
    sift = ["weights", "download", "sift_lightglue", "--url", f"{server}/good.pth"]
    hits = len(_Handler.hits)
    done = invoke(*sift, check_code=None)
    assert done.returncode == 1 and "--sha256 HEX" in done.stderr and "--trust-unverified" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and len(_Handler.hits) == hits  # nothing fetched
    wrong = invoke(*sift, "--sha256", "ab" * 32, check_code=None)
    assert wrong.returncode == 1 and "checksum mismatch" in wrong.stderr
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    trusted = invoke(*sift, "--trust-unverified", check_code=None)
    assert trusted.returncode == 0 and f"recorded sha256 {digest}" in trusted.stderr
    path = tmp_path / "cache" / "sift_lightglue.pth"
    recorded = (tmp_path / "cache" / "sift_lightglue.pth.sha256").read_text()
    assert path.read_bytes() == PAYLOAD and recorded.startswith(digest)
    path.write_bytes(b"tampered")  # a later load checks the recorded digest
    with pytest.raises(WeightsError, match="checksum mismatch"):
        weights.verify("sift_lightglue", path)
    ok = invoke(*sift, "--sha256", digest, "--force", check_code=None)
    assert ok.returncode == 0 and path.read_bytes() == PAYLOAD, ok.stderr


def test_git_blob_id_and_torch_errors_in_one_short_line(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello\n")
    assert weights.git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object f.bin`
    pickled = tmp_path / "pickled.pth"
    torch.save({"conv.weight": torch.zeros(1), "meta": Path("x")}, pickled)  # an object: not plain tensors
    with pytest.raises(WeightsError) as err:
        weights.load_state_dict("superpoint", pickled)
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message and len(message) < 200


def test_file_urls_need_trust_unverified(cache, tmp_path, monkeypatch):
    """A file:// URL is refused before anything is read, unless --trust-unverified; then its digest is recorded."""
    source = tmp_path / "local.pth"
    source.write_bytes(PAYLOAD)
    register(monkeypatch, "http://example.invalid/never-used", None)
    with pytest.raises(WeightsError, match="file:// URLs are refused") as err:
        download("superpoint", url=source.as_uri(), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert "\n" not in str(err.value) and "--trust-unverified" in str(err.value)
    for url in ("ftp://127.0.0.1/x.pth", "data:,hello", str(source)):
        with pytest.raises(WeightsError, match="not an http"):
            download("superpoint", url=url, trust_unverified=True)
    assert listing(cache) == []
    path = download("superpoint", url=source.as_uri(), trust_unverified=True)
    assert path.read_bytes() == PAYLOAD
    assert weights.recorded_sha256_path(path).read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()


def test_sha256_given_is_recorded_and_checked_by_every_later_load(server, cache, monkeypatch):
    body = _Handler.files["/superpoint_v1.pth"]
    digest = hashlib.sha256(body).hexdigest()
    register(monkeypatch, f"{server}/superpoint_v1.pth", None)
    path = download("superpoint", sha256=digest.upper())
    assert weights.recorded_sha256_path(path).read_text().split() == [digest, path.name]
    assert isinstance(SuperPoint.from_weights(), SuperPoint)  # verified against the record, loads
    tampered = bytearray(body)
    tampered[-100] ^= 1
    path.write_bytes(bytes(tampered))
    with pytest.raises(WeightsError, match="checksum mismatch") as err:
        SuperPoint.from_weights()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # a file already present and valid: --sha256 records it without a download
    path.write_bytes(body)
    weights.recorded_sha256_path(path).unlink()
    _Handler.hits.clear()
    assert download("superpoint", sha256=digest) == path and _Handler.hits == []
    assert weights.recorded_sha256_path(path).read_text().startswith(digest)


def test_download_urls_are_pinned():
    """Every GitHub URL names a release tag or a commit, never a moving branch."""
    import re

    for spec in weights.REGISTRY.values():
        assert spec.url.startswith("https://github.com/"), spec.url
        assert re.search(r"/(releases/download/v[\w.]+|raw/[0-9a-f]{7,40})/", spec.url), spec.url
    assert re.search(r"/raw/[0-9a-f]{40}/weights/xfeat\.pt$", weights.REGISTRY["xfeat"].url)
