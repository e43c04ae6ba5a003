"""The checkpoint download cache against a local HTTP server (Range support, truncation, lies)."""

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from feature_extract import download

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # spans several download chunks


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload``; honours ``Range: bytes=N-`` unless ``server.ignore_range``;
    sends only ``server.cut`` bytes of the body once when set; can lie in Content-Length."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        data = srv.payload
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and not srv.ignore_range else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body) + srv.extra_length))
        self.end_headers()
        cut, srv.cut = srv.cut, None
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.ranges, srv.cut, srv.ignore_range, srv.extra_length = (
        PAYLOAD,
        [],
        None,
        False,
        0,
    )
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv, name="model.npz"):
    return f"http://127.0.0.1:{srv.server_address[1]}/ckpt/{name}"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def test_download_records_sha256_and_uses_cache(server, tmp_path):
    path, digest = download.fetch(
        _url(server), cache_dir=str(tmp_path), size=len(PAYLOAD), sha256=_sha(PAYLOAD)
    )
    assert path == str(tmp_path / "model.npz")
    assert Path(path).read_bytes() == PAYLOAD
    assert digest == _sha(PAYLOAD)
    assert Path(path + ".sha256").read_text().split()[0] == _sha(PAYLOAD)
    assert not os.path.exists(path + ".part")
    # Second call: served from the cache, no request.
    assert download.fetch(_url(server), cache_dir=str(tmp_path)) == (path, digest)
    assert len(server.ranges) == 1


def test_env_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DPLP_CACHE", str(tmp_path / "envcache"))
    path, _ = download.fetch(_url(server))
    assert path == str(tmp_path / "envcache" / "model.npz")


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.cut = 1_500_000
    with pytest.raises(download.DownloadError, match="resume"):
        download.fetch(_url(server), cache_dir=str(tmp_path))
    part = tmp_path / "model.npz.part"
    assert part.read_bytes() == PAYLOAD[:1_500_000]
    assert not (tmp_path / "model.npz").exists()
    path, digest = download.fetch(_url(server), cache_dir=str(tmp_path), sha256=_sha(PAYLOAD))
    assert server.ranges == [None, "bytes=1500000-"]
    assert Path(path).read_bytes() == PAYLOAD and digest == _sha(PAYLOAD)


def test_server_ignoring_range_restarts(server, tmp_path):
    (tmp_path / "model.npz.part").write_bytes(b"garbage!" * 10)
    server.ignore_range = True
    path, digest = download.fetch(_url(server), cache_dir=str(tmp_path))
    assert Path(path).read_bytes() == PAYLOAD and digest == _sha(PAYLOAD)


def test_size_mismatch_is_an_error(server, tmp_path):
    with pytest.raises(download.DownloadError, match=f"expected {len(PAYLOAD) + 1}"):
        download.fetch(_url(server), cache_dir=str(tmp_path), size=len(PAYLOAD) + 1)
    assert not (tmp_path / "model.npz").exists()
    # The server promises more bytes than it sends: short file, kept for resuming, not installed.
    server.extra_length = 100
    with pytest.raises(download.DownloadError, match=f"got {len(PAYLOAD)} bytes"):
        download.fetch(_url(server, "other.npz"), cache_dir=str(tmp_path))
    assert not (tmp_path / "other.npz").exists()


def test_sha256_mismatch_deletes_fresh_download(server, tmp_path):
    with pytest.raises(download.DownloadError, match="sha256"):
        download.fetch(_url(server), cache_dir=str(tmp_path), sha256="0" * 64)
    assert not (tmp_path / "model.npz").exists()


def test_file_placed_by_hand_is_hashed_and_checked(tmp_path):
    (tmp_path / "hand.npz").write_bytes(b"abc")
    url = "http://127.0.0.1:9/x/hand.npz"
    path, digest = download.fetch(url, cache_dir=str(tmp_path), download=False)
    assert digest == _sha(b"abc") and path == str(tmp_path / "hand.npz")
    with pytest.raises(download.DownloadError, match="sha256"):
        download.fetch(url, cache_dir=str(tmp_path), sha256=_sha(b"abd"))
    with pytest.raises(download.DownloadError, match="expected 4"):
        download.fetch(url, cache_dir=str(tmp_path), size=4)


def test_offline_error_names_url_and_destination(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    url = f"http://127.0.0.1:{port}/bit/BiT-M-R50x1.npz"
    with pytest.raises(download.DownloadError) as err:
        download.fetch(url, cache_dir=str(tmp_path), timeout=5)
    msg = str(err.value)
    assert url in msg and str(tmp_path / "BiT-M-R50x1.npz") in msg and "--checkpoint" in msg
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        download.fetch(url, cache_dir=str(tmp_path), download=False)
