"""Loopback helpers: free ports and waiting for an HTTP endpoint."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import requests


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll check() until it is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except (requests.RequestException, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return requests.get(url, headers=headers, timeout=1, proxies={"http": "", "https": ""}).status_code == 200
