"""Admin socket placement: owner-only, inside the state directory when the path fits a Unix socket."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from meshy.local import admin


def test_sockets_live_in_the_state_directory_when_they_fit():
    # A short directory of its own: pytest's tmp_path (deeper still under pytest-xdist) may be too long to fit.
    state = Path(tempfile.mkdtemp(prefix="meshy-")) / "s"
    try:
        path = admin.socket_path(state, "istio-ingressgateway")
        assert path == state / "admin" / "istio-ingressgateway.sock"
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(state.parent)


def test_deep_state_directories_and_long_names_still_give_short_socket_paths(tmp_path):
    state = tmp_path / ("d" * 120) / "state"
    path = admin.socket_path(state, "minimal-service-v2-" + "x" * 80)
    try:
        assert len(str(path)) <= admin.MAX_SOCKET_PATH
        assert not str(path).startswith(str(state))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        # Two proxies never share a socket.
        assert path != admin.socket_path(state, "minimal-service-v2-" + "y" * 80)
    finally:
        shutil.rmtree(admin.sockets_location(state), ignore_errors=True)


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.path.encode()
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class UnixHTTPServer(HTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "localhost", 0


def test_get_speaks_http_over_a_unix_socket(tmp_path):
    path = tmp_path / "admin.sock"
    server = UnixHTTPServer(str(path), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert admin.get(path, "/stats?filter=x") == "/stats?filter=x"
        assert admin.get(path, "/missing") is None  # not 200
        assert admin.get(tmp_path / "absent.sock", "/ready") is None  # nobody there
    finally:
        server.shutdown()
        server.server_close()
