from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshy import ROOT
from meshy.net import free_port, http_ok, wait_until


@dataclass
class Service:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator:
    """Start real minimal-service processes on free loopback ports."""
    started: list[Service] = []

    def start(**env: str) -> Service:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        full_env.update({"SERVICE_PORT": str(port), "HOSTNAME": f"test-{port}"}, **env)
        log = tmp_path / f"service-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "minimal_service"],
            cwd=ROOT,
            env=full_env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        service = Service(f"http://127.0.0.1:{port}", port, process, log)
        started.append(service)
        if not wait_until(lambda: http_ok(service.url + "/health"), timeout=10):
            raise RuntimeError(f"minimal-service did not start: {service.output()}")
        return service

    yield start
    for service in started:
        if service.process.poll() is None:
            service.process.kill()
            service.process.wait()
