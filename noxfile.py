"""nox sessions: tests, lint, render, e2e-local, e2e-<k8s>-istio-<istio>, bench.

Each session installs requirements.txt into its own virtual environment;
environments are reused between runs, so only the first run pays for it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nox
import yaml

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # the project's own helpers
from meshy.net import claim_address_base  # noqa: E402

PAIRS = [
    f"{p['k8s']}-istio-{p['istio']}" for p in yaml.safe_load((ROOT / "manifests/matrix.yaml").read_text())["pairs"]
]
# kubernetes-validate carries schemas for a window of Kubernetes versions per release.
OLD_SCHEMAS = ("kubernetes-validate==1.25.2", "setuptools<70")  # Kubernetes 1.11-1.25; it imports pkg_resources

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "render", "tests"]


def install(session: nox.Session, *extra: str) -> None:
    session.install("-r", "requirements.txt", *extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def crds_env() -> dict[str, str]:
    default = ROOT.parent / "shared" / "istio-crds"
    return {"MESHY_ISTIO_CRDS": os.environ.get("MESHY_ISTIO_CRDS", str(default))}


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, golden and black-box tests (real processes, real Envoy, real HTTP)."""
    install(session)
    session.run("pytest", *session.posargs, env=crds_env())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("pair", PAIRS)
def render(session: nox.Session, pair: str) -> None:
    """Render every template for a pair and validate every object (Kubernetes and Istio schemas)."""
    k8s_minor = int(pair.split("-")[0].split(".")[1])
    install(session)
    if k8s_minor <= 25:
        session.install(*OLD_SCHEMAS)
    session.run("python", "-m", "meshy.validate", pair, env=crds_env())


@nox.session(name="e2e-local")
def e2e_local(session: nox.Session) -> None:
    """The whole demo on the local backend (real Envoy, no cluster); fails if any verdict fails."""
    install(session)
    # Its own state, address block and ingress port: a mesh the user keeps running is left alone.
    state = Path(session.create_tmp()) / "meshy-state"
    base, _claim = claim_address_base()  # held until the session ends
    env = {
        "MESHY_STATE": str(state),
        "MESHY_ADDRESS_BASE": os.environ.get("MESHY_ADDRESS_BASE", str(base)),
        "MESHY_INGRESS": os.environ.get("MESHY_INGRESS", f"127.0.0.1:{free_port()}"),
        "MESHY_DASHBOARD": os.environ.get("MESHY_DASHBOARD", f"127.0.0.1:{free_port()}"),
    }
    session.run("inv", "demo", "--backend", "local", "--down", env=env)


def docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def e2e_kind(pair: str):
    k8s, istio = pair.split("-istio-")

    def session_function(session: nox.Session) -> None:
        if not docker_running():
            session.error(
                f"e2e-{pair} needs a running Docker engine (plus kind and kubectl); on this machine use e2e-local"
            )
        install(session)
        try:
            session.run("inv", "demo", "--backend", "kind", "--k8s", k8s, "--istio", istio)
        finally:
            session.run("inv", "down", "--k8s", k8s, "--istio", istio)

    session_function.__doc__ = f"Build kind {k8s} + Istio {istio} from nothing, run every scenario, tear down."
    return session_function


for _pair in PAIRS:
    nox.session(name=f"e2e-{_pair}")(e2e_kind(_pair))


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory figures of the README (needs `hey`: apt-get install hey)."""
    install(session)
    session.run("python", "scripts/bench.py", *session.posargs)
