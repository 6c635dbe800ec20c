"""Envoy admin interfaces on owner-only Unix sockets, and a small HTTP client for them.

An admin interface can dump the configuration, change log levels and stop the
proxy, so it must not be reachable by other local users: each proxy's admin
listens on a socket of mode 0600 (Envoy's `pipe` address with `mode`, see
envoy api/envoy/config/core/v3/address.proto, message Pipe) in a 0700
directory. requests cannot speak HTTP over a Unix socket; http.client can.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
from pathlib import Path

from meshy.local.paths import PathError, child, private_dir

# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 100


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 to a server listening on a Unix socket."""

    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(path: Path, target: str, timeout: float = 1.0) -> str | None:
    """GET target from the admin at path: the body on 200, None if it is not there or answers otherwise."""
    return call(path, "GET", target, timeout)


def post(path: Path, target: str, timeout: float = 1.0) -> str | None:
    """POST to the admin at path (its endpoints that change state, e.g. /reopen_logs, refuse GET)."""
    return call(path, "POST", target, timeout)


def call(path: Path, method: str, target: str, timeout: float) -> str | None:
    connection = UnixHTTPConnection(path, timeout)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def sockets_location(state_dir: Path) -> Path:
    """Where the admin sockets of a state directory live: inside it, or (deep paths) in a temp dir."""
    inside = state_dir / "admin"
    if len(str(inside)) + 20 <= MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"meshy-{digest}-admin"


def socket_dir(state_dir: Path) -> Path:
    """The admin sockets' directory, created owner-only (0700) and checked to be ours."""
    directory = private_dir(sockets_location(state_dir))
    if directory.stat().st_uid != os.getuid():
        raise PathError(f"{directory} belongs to another user; remove it or use a shorter --state path.")
    return directory


def socket_path(state_dir: Path, proxy: str) -> Path:
    """The admin socket of one proxy: its name when that fits a socket path, else a hash of it."""
    directory = socket_dir(state_dir)
    readable = child(directory, f"{proxy}.sock")
    if len(str(readable)) <= MAX_SOCKET_PATH:
        return readable
    return child(directory, hashlib.sha256(proxy.encode()).hexdigest()[:16] + ".sock")
