"""The access-log entries every local proxy writes, and reading them back.

The text format is Istio's default (EnvoyTextLogFormat in
istio/istio pilot/pkg/model/telemetry_logging.go at 1.30.3), so `inv
local.logs` reads as `kubectl logs -c istio-proxy` does. The JSON format
carries what Istio's stats filter would know from peer metadata; the
listener name is written into each line as a literal, because it tells the
reporter (outbound and gateway listeners report as source, inbound as
destination, as Istio's sidecars and gateways do).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_LOGGER = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
TEXT_FILE = "access.log"
JSON_FILE = "access.json"
READ_LIMIT = 256 * 1024

# Istio's default text access-log format, operator by operator (see module docstring).
TEXT_FORMAT = (
    " ".join(
        [
            "[%START_TIME%]",
            '"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"',
            "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%",
            '"%UPSTREAM_TRANSPORT_FAILURE_REASON%"',
            "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
            '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"',
            "%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS%",
            "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%",
        ]
    )
    + "\n"
)

# Only what the collector reads (the text log has the rest); durations in microseconds so the
# sub-millisecond buckets of Istio's histogram are meaningful.
JSON_FIELDS = {
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "protocol": "%PROTOCOL%",
    "request_bytes": "%BYTES_RECEIVED%",
    "response_bytes": "%BYTES_SENT%",
    "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_host": "%UPSTREAM_HOST%",
    # The connection's own peer, not the address x-forwarded-for names: the peer address is what
    # tells the calling proxy (each binds its upstream connections to its own address).
    "downstream_remote": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%",
}
# The SPIFFE ids of a mutual TLS connection (Istio's source_principal / destination_principal):
# an inbound listener's callers are downstream, everyone else's peers upstream.
PRINCIPALS = {
    True: {"peer_principal": "%DOWNSTREAM_PEER_URI_SAN%", "local_principal": "%DOWNSTREAM_LOCAL_URI_SAN%"},
    False: {"peer_principal": "%UPSTREAM_PEER_URI_SAN%", "local_principal": "%UPSTREAM_LOCAL_URI_SAN%"},
}


def access_logs(directory: Path, listener: str, tcp: bool = False) -> list[dict[str, Any]]:
    """The `access_log` entries of one listener of the proxy owning `directory`: its HTTP connection
    manager's (one line per request) or, with tcp, its tcp_proxy's (one line per connection)."""
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOGGER,
                "path": str(directory / TEXT_FILE),
                "log_format": {"text_format_source": {"inline_string": TEXT_FORMAT}},
            },
        },
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOGGER,
                "path": str(directory / JSON_FILE),
                "log_format": {
                    "json_format": {
                        **JSON_FIELDS,
                        **PRINCIPALS[inbound(listener)],
                        "listener": listener,
                        **({"transport": "tcp"} if tcp else {}),
                    }
                },
            },
        },
    ]


@dataclass(frozen=True)
class Entry:
    """One request as one proxy saw it."""

    proxy: str
    listener: str
    code: int
    flags: str
    protocol: str
    request_bytes: int
    response_bytes: int
    duration_ms: float
    upstream_cluster: str
    upstream_host: str
    downstream_remote: str
    peer_principal: str = ""  # empty: no mutual TLS on the connection
    local_principal: str = ""
    tcp: bool = False  # one TCP connection (a tcp_proxy's line), not one HTTP request

    @property
    def reporter(self) -> str:
        return "destination" if inbound(self.listener) else "source"


def inbound(listener: str) -> bool:
    return listener.startswith("inbound")


def principal(value: Any) -> str:
    """A SPIFFE id Envoy logged; Envoy writes '-' when the connection had none."""
    text = str(value or "")
    return "" if text == "-" else text


def number(value: Any) -> int:
    """Envoy writes '-' (or nothing) for a value it does not have."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_line(proxy: str, line: str) -> Entry | None:
    """An entry from one JSON access-log line; None for a line cut short or not ours."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "listener" not in data:
        return None
    return Entry(
        proxy=proxy,
        listener=str(data["listener"]),
        code=number(data.get("code")),
        flags=str(data.get("flags") or "-"),
        protocol=str(data.get("protocol") or ""),
        request_bytes=number(data.get("request_bytes")),
        response_bytes=number(data.get("response_bytes")),
        duration_ms=number(data.get("duration_us")) / 1000.0,
        upstream_cluster=str(data.get("upstream_cluster") or ""),
        upstream_host=str(data.get("upstream_host") or ""),
        downstream_remote=str(data.get("downstream_remote") or ""),
        peer_principal=principal(data.get("peer_principal")),
        local_principal=principal(data.get("local_principal")),
        tcp=data.get("transport") == "tcp",
    )


def rotated(path: Path) -> Path:
    """Where a rotated log's previous generation lives (see meshy.local.telemetry.rotation)."""
    return path.with_name(path.name + ".1")


@dataclass
class Tail:
    """Reads what was appended to one file since the last call; survives the file being replaced, and
    reads a rotated file (moved to NAME.1) to its end before the new one."""

    path: Path
    offset: int = 0
    inode: int = 0
    partial: str = ""

    def read(self) -> list[str]:
        """Complete lines appended since the last call, at most READ_LIMIT bytes of them; call again for more."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stat = None
        if self.inode and (stat is None or stat.st_ino != self.inode):
            lines = self.finish_rotated()
            if lines is not None:
                return lines
        if stat is None:
            return []
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            self.inode, self.offset, self.partial = stat.st_ino, 0, ""
        return self.read_from(self.path, stat.st_size)

    def finish_rotated(self) -> list[str] | None:
        """The rest of the file this tail was reading, now at NAME.1; None once it is read to its end.
        The writer (Envoy) closes the old file before it creates the new one, so a new file at the path
        means the old one has stopped growing."""
        try:
            stat = rotated(self.path).stat()
        except FileNotFoundError:
            return None
        if stat.st_ino != self.inode or stat.st_size <= self.offset:
            return None
        return self.read_from(rotated(self.path), stat.st_size)

    def read_from(self, path: Path, size: int) -> list[str]:
        if size == self.offset:
            return []
        with open(path, "rb") as handle:
            handle.seek(self.offset)
            # Bounded reads keep a burst of traffic from inflating the reader's memory for good.
            chunk = handle.read(min(size - self.offset, READ_LIMIT))
        self.offset += len(chunk)
        text = self.partial + chunk.decode(errors="replace")
        *lines, self.partial = text.split("\n")
        return lines


def last_lines(path: Path, n: int) -> list[str]:
    """The last n lines of a log, reaching into its previous generation (NAME.1) when the current one,
    just rotated, holds fewer."""
    lines: list[str] = []
    for generation in (path, rotated(path)):
        if len(lines) >= n:
            break
        text = generation.read_text(errors="replace").splitlines() if generation.exists() else []
        lines = text + lines
    return lines[max(0, len(lines) - n) :]


def tails_at_end(paths: list[Path]) -> list[Tail]:
    """Readers of the files that start after what they hold now."""
    tails = [Tail(path) for path in paths]
    for tail in tails:
        while tail.read():
            pass
    return tails


def follow(tails: list[Tail], write: Callable[[str], None], stop: threading.Event, interval: float = 0.2) -> None:
    """Pass on every line appended to the files (tail -f) until `stop` is set."""
    while not stop.wait(interval):
        for tail in tails:
            for line in tail.read():
                write(line)
