"""One HTTP server for the whole mesh: /metrics (Istio's standard metrics), the dashboard page, its data."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from meshy.dashboard import page
from meshy.dashboard.graph import SERIES_STEP, Graph
from meshy.local.telemetry.collector import Collector

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript", ".LICENSE": "text/plain"}
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Dashboard:
    """The collector, the graph it feeds, and the thread that keeps both current."""

    state_dir: Path
    collector: Collector = field(init=False)
    graph: Graph = field(default_factory=Graph)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.collector = Collector(self.state_dir)
        self.collector.observers.append(self.graph.observe)

    def run_ticks(self) -> None:
        # Poll often so the graph stays live between page loads; each tick closes a series step.
        while not self.stopped.wait(SERIES_STEP):
            self.collector.poll()
            with self.collector.lock:
                self.graph.tick()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        route = path.split("?", 1)[0]
        if route == "/metrics":
            return 200, PROMETHEUS_TYPE, self.collector.exposition().encode()
        self.collector.poll()
        with self.collector.lock:
            if route == "/":
                return 200, "text/html; charset=utf-8", page.page(self.graph, SERIES_STEP).encode()
            if route == "/graph.json":
                return 200, "application/json", json.dumps(page.graph_json(self.graph)).encode()
            if route == "/table":
                return 200, "text/html; charset=utf-8", page.table(self.graph).encode()
            if route in ("/series/versions.svg", "/series/codes.svg"):
                kind = route.rsplit("/", 1)[1].removesuffix(".svg")
                return 200, "image/svg+xml", page.series_svg(self.graph, kind, SERIES_STEP).encode()
        if route.startswith("/static/"):
            name = route.removeprefix("/static/")
            target = STATIC / name
            if "/" not in name and target.is_file():
                return 200, STATIC_TYPES.get(target.suffix, "application/octet-stream"), target.read_bytes()
        return 404, "text/plain", b"not found; see / for the dashboard and /metrics for the metrics\n"


def serve(dashboard: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (loopback only: the caller checked the host) and return the server, not yet serving."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            status, content_type, body = dashboard.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            # Scrapes every few seconds would drown the program's log.
            pass

    server = SharedPortServer((host, port), Handler)
    server.daemon_threads = True
    return server


class SharedPortServer(ThreadingHTTPServer):
    """Binds with SO_REUSEPORT: when a new supervisord takes the mesh over, the successor
    listens beside the old dashboard until that one is stopped (as the apps and Envoys do)."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
