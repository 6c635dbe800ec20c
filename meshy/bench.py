"""Benchmark helpers: running hey against loopback targets and reading its summary; background callers."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


def parse_hey(text: str) -> Load:
    """The numbers of hey's text summary."""

    def percentile(p: int) -> float:
        match = re.search(rf"^\s+{p}% in ([\d.]+) secs", text, re.M)
        return float(match.group(1)) * 1000 if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)
    errors = sum(int(count) for code, count in codes if not code.startswith("2"))
    _, _, failures = text.partition("Error distribution:")
    errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", failures, re.M))
    return Load(float(rps.group(1)) if rps else 0.0, percentile(50), percentile(90), percentile(99), errors)


def hey(
    url: str,
    *,
    seconds: int,
    workers: int,
    rate_per_worker: int = 0,
    host: str | None = None,
    proxy: str | None = None,
    cpu: str | None = None,
) -> Load:
    if shutil.which("hey") is None:
        raise RuntimeError("hey is not installed; install it (Debian: apt-get install hey) and rerun nox -s bench.")
    command = ["hey", "-z", f"{seconds}s", "-c", str(workers)]
    if rate_per_worker:
        command += ["-q", str(rate_per_worker)]
    if host:
        command += ["-host", host]
    if proxy:
        command += ["-x", proxy]
    command.append(url)
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_hey(output)


@dataclass
class Outcome:
    """What a background load saw: when each request ended and whether it failed."""

    ok: int = 0
    failed: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    served_by: set[str] = field(default_factory=set)  # the apps (HOSTNAME) that answered, when tracked


class PacedLoad:
    """Requests at a fixed total rate from a few keep-alive clients, in background threads.

    Unlike hey it keeps every failure with its time, so a benchmark can tell
    which event (a reload, a kill) a failed request belongs to.
    """

    def __init__(
        self, url: str, rate: float, host: str | None = None, clients: int = 8, track_servers: bool = False
    ) -> None:
        self.url = url
        # minimal-service names the pod that answered (servedBy): a rollout test sees traffic move.
        self.track_servers = track_servers
        self.interval = clients / rate
        self.headers = {"Host": host} if host else {}
        self.clients = clients
        self.outcome = Outcome()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> PacedLoad:
        for index in range(self.clients):
            thread = threading.Thread(target=self.client, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def client(self, index: int) -> None:
        session = requests.Session()
        session.trust_env = False
        next_at = time.monotonic() + index * self.interval / self.clients
        while not self.stopping.is_set():
            next_at += self.interval
            served = None
            try:
                response = session.get(self.url, headers=self.headers, timeout=5)
                failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
                if failure is None and self.track_servers:
                    served = response.json().get("servedBy")
            except (requests.RequestException, ValueError) as error:
                failure = type(error).__name__
            with self.lock:
                if failure:
                    self.outcome.failed += 1
                    self.outcome.failures.append((time.monotonic(), failure))
                else:
                    self.outcome.ok += 1
                    if served:
                        self.outcome.served_by.add(served)
            self.stopping.wait(max(0.0, next_at - time.monotonic()))


@contextmanager
def repeating(call: Callable[[], object], every: float = 0.0) -> Iterator[None]:
    """Call `call` over and over in a background thread (pausing `every` seconds) for the block's duration."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            call()

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=30)
