"""Running the cluster path's entry points against the stand-ins, and comparing with the dry plan.

Used by tests/test_standin_runs.py and by the `standins-<pair>` nox sessions.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from meshy.net import free_port
from meshy.versions import Pair

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
TOOLS = ("docker", "kind", "kubectl", "istioctl")
# The add-ons the stand-in cluster gets from samples/addons (Istio ships these four in all three releases).
ADDONS = ("grafana", "jaeger", "kiali", "prometheus")


def standin_env(work: Path, address_base: int, python: str = sys.executable) -> dict[str, str]:
    """Environment variables that put the stand-ins first on PATH and keep everything inside `work`."""
    work = work.resolve()
    ports = {name: free_port() for name in ("ingress", "ingress-https", "tcp", "kiali", "grafana", "registry", "nginx")}
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MESHY_STANDIN_STATE": str(work / "standins"),
        "MESHY_STANDIN_PYTHON": python,
        "MESHY_CACHE": str(work / "cache"),
        "MESHY_ADDRESS_BASE": str(address_base),
        "MESHY_HOST_PORTS": ",".join(f"{name}={port}" for name, port in ports.items()),
        # The local mesh behind the stand-ins serves its dashboard too: never on another mesh's port.
        "MESHY_DASHBOARD": f"127.0.0.1:{free_port()}",
    }


def seed_istio(cache: Path, pair: Pair, python: str = sys.executable) -> Path:
    """An unpacked 'release' in the cache: istioctl is the stand-in, samples/addons names the four add-ons.

    The download itself (HTTPS to GitHub) is tested in tests/test_download.py against a local server.
    """
    home = cache / f"istio-{pair.istio_release}"
    (home / "bin").mkdir(parents=True, exist_ok=True)
    istioctl = home / "bin" / "istioctl"
    istioctl.write_text(f'#!/bin/sh\nexec {shlex.quote(str(BIN / "istioctl"))} "$@"\n')
    istioctl.chmod(0o755)
    addons = home / "samples" / "addons"
    addons.mkdir(parents=True, exist_ok=True)
    for name in ADDONS:
        (addons / f"{name}.yaml").write_text(
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: istio-system\n"
            f"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: istio-system\n"
        )
    return home


def is_command(line: str) -> bool:
    first = line.split(" ", 1)[0]
    return first in TOOLS or first.endswith("/istioctl")


def plan_commands(output: str) -> list[str]:
    """The command lines of a dry plan, istioctl's path shortened to its name as the stand-in logs it."""
    commands = []
    for line in output.splitlines():
        if is_command(line):
            first, _, rest = line.partition(" ")
            commands.append(f"{Path(first).name} {rest}".rstrip())
    return commands


def logged_commands(state: Path) -> list[str]:
    log = state / "commands.log"
    return log.read_text().splitlines() if log.exists() else []


def first_difference(plan: list[str], log: list[str]) -> str:
    for index, (planned, ran) in enumerate(zip(plan, log, strict=False)):
        if planned != ran:
            return f"command {index + 1}: planned {planned!r}, ran {ran!r}"
    return f"the plan has {len(plan)} commands, the run {len(log)}"
