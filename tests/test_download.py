"""The Istio download against a real HTTP server on loopback serving a test archive."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from meshy.console import Console
from meshy.download import Artifact, DownloadError, download, extract, istio_artifact
from meshy.net import free_port
from meshy.versions import select_pair


def make_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {
            "istio-9.9.9/bin/istioctl": "#!/bin/sh\necho fake\n",
            "istio-9.9.9/samples/addons/a.yaml": "x: 1\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue() + b"\0" * 200_000  # padding so a cut-off transfer is mid-stream


ARCHIVE = make_archive()
DIGEST = hashlib.sha256(ARCHIVE).hexdigest()


class Server:
    """Serves /istio.tar.gz, /istio.tar.gz.sha256 and /cut.tar.gz (closes after half)."""

    def __init__(self) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if self.path == "/istio.tar.gz":
                    self._send(ARCHIVE)
                elif self.path == "/istio.tar.gz.sha256":
                    self._send(f"{DIGEST}  istio.tar.gz\n".encode())
                elif self.path == "/cut.tar.gz":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(ARCHIVE)))
                    self.end_headers()
                    self.wfile.write(ARCHIVE[: len(ARCHIVE) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                else:
                    self.send_error(404)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def artifact(self, path: str, sha256: str | None) -> Artifact:
        return Artifact(f"{self.base}/{path}", sha256, f"{self.base}/{path}.sha256", "istio-9.9.9.tar.gz")


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_good_download_is_verified_cached_and_unpacked(server, tmp_path):
    path = download(server.artifact("istio.tar.gz", DIGEST), tmp_path, Console(quiet=True))
    assert path.read_bytes() == ARCHIVE
    first = server.requests
    assert download(server.artifact("istio.tar.gz", DIGEST), tmp_path, Console(quiet=True)) == path
    assert server.requests == first  # served from the cache
    home = extract(path, tmp_path / "unpacked")
    assert (home / "bin" / "istioctl").read_text().startswith("#!/bin/sh")
    assert extract(path, tmp_path / "unpacked") == home


def test_published_checksum_is_used_when_none_is_pinned(server, tmp_path):
    path = download(server.artifact("istio.tar.gz", None), tmp_path, Console(quiet=True))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DIGEST


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch for istio-9.9.9.tar.gz"):
        download(server.artifact("istio.tar.gz", "0" * 64), tmp_path, Console(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_cut_off_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="cut off"):
        download(server.artifact("cut.tar.gz", DIGEST), tmp_path, Console(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cache_is_replaced(server, tmp_path):
    (tmp_path / "istio-9.9.9.tar.gz").write_bytes(b"half a file")
    path = download(server.artifact("istio.tar.gz", DIGEST), tmp_path, Console(quiet=True))
    assert path.read_bytes() == ARCHIVE


def test_missing_release_and_no_network(server, tmp_path):
    with pytest.raises(DownloadError, match="answered 404"):
        download(server.artifact("nope.tar.gz", DIGEST), tmp_path, Console(quiet=True))
    closed = Artifact(f"http://127.0.0.1:{free_port()}/x.tar.gz", DIGEST, "", "x.tar.gz")
    with pytest.raises(DownloadError, match="cannot reach .* check the network connection"):
        download(closed, tmp_path, Console(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_artifact_names_follow_istio_releases():
    pair = select_pair("1.19", "1.8")
    linux = istio_artifact(pair, "Linux", "x86_64")
    assert linux.url.endswith("/1.8.6/istio-1.8.6-linux-amd64.tar.gz")
    # release/downloadIstioCandidate.sh: macOS archives are "osx", "osx-arm64" only from Istio 1.10.
    assert istio_artifact(pair, "Darwin", "arm64").name == "istio-1.8.6-osx.tar.gz"
    assert istio_artifact(pair, "Darwin", "x86_64").name == "istio-1.8.6-osx.tar.gz"
    assert istio_artifact(select_pair("1.36", "1.30"), "Darwin", "arm64").name == "istio-1.30.3-osx-arm64.tar.gz"
    assert istio_artifact(select_pair("1.36", "1.30"), "Darwin", "x86_64").name == "istio-1.30.3-osx.tar.gz"
    assert linux.sha256 is None  # not pinned: verified against the published .sha256
    newest = select_pair("1.36", "1.30")
    assert istio_artifact(newest, "Linux", "x86_64").sha256 == newest.istio_sha256["linux-amd64"]
    assert istio_artifact(newest, "Darwin", "arm64").sha256 is None
    with pytest.raises(DownloadError, match="no archive for windows"):
        istio_artifact(pair, "Windows", "x86_64")


def test_unpack_refuses_archives_without_one_top_folder(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("a/x", "b/y"):
            info = tarfile.TarInfo(name)
            tar.addfile(info, io.BytesIO(b""))
    archive = tmp_path / "two.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="does not hold one top folder"):
        extract(archive, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
    assert Path(tmp_path / "out").exists()
