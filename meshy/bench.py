"""Benchmark helpers: running hey against loopback targets and reading its summary; background callers."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


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
