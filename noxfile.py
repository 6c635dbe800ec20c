"""nox sessions: tests, lint, render, e2e-local, e2e-local-<pair>, e2e-<k8s>-istio-<istio>, bench, reliability.

The sessions that need the project's packages share one environment: the
.venv that scripts/run creates from requirements.txt (they run with
venv_backend="none" inside it, so nothing is installed twice). lint gets a
small environment holding ruff alone; rendering for Kubernetes <= 1.25 one
with the older schema package and the three libraries validation imports.
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


# What CI runs (`nox -t ci`): lint, schemas, the suite, the demo per pair, the kind path on stand-ins.
CI = "ci"
# Sessions that run in the project's .venv.
PROJECT_ENV = "none"
OLD_SCHEMAS_ENV = ROOT / ".nox" / "old-schemas"
# pytest-xdist workers: more than this machine's 2 cores, as the tests mostly wait on processes and
# sockets (measured: 318 s in one worker, 198 s in two, 162 s in three).
PYTEST_WORKERS = ["-n", "3"]


def install(session: nox.Session, *extra: str) -> None:
    """The project's packages: present in .venv already, installed into a session's own environment otherwise."""
    if session.venv_backend != PROJECT_ENV:
        session.install("-r", "requirements.txt", *extra)
        return
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        session.error(
            f"{session.name} runs in the project's environment; start nox through it: scripts/run nox -s {session.name}"
        )


def pins(*names: str) -> list[str]:
    """requirements.txt's exact pins of these packages, so a small environment matches the project's."""
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    found = [line for line in lines if line.split("==")[0].lower() in {n.lower() for n in names}]
    if len(found) != len(names):
        raise RuntimeError(f"requirements.txt does not pin all of {', '.join(names)}")
    return found


def old_schemas_python(session: nox.Session) -> str:
    """Python of the small environment that validates with kubernetes-validate's older schemas."""
    python = OLD_SCHEMAS_ENV / "bin" / "python"
    wanted = [*OLD_SCHEMAS, *pins("Jinja2", "PyYAML", "jsonschema")]
    stamp = OLD_SCHEMAS_ENV / "requirements.txt"
    if not python.exists():
        # run_install: also under --install-only, where session.run does nothing.
        session.run_install(sys.executable, "-m", "venv", str(OLD_SCHEMAS_ENV), external=True)
    if not stamp.exists() or stamp.read_text() != "\n".join(wanted):
        session.run_install(str(python), "-m", "pip", "install", "--disable-pip-version-check", *wanted, external=True)
        stamp.write_text("\n".join(wanted))
    return str(python)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def crds_env() -> dict[str, str]:
    default = ROOT.parent / "shared" / "istio-crds"
    return {"MESHY_ISTIO_CRDS": os.environ.get("MESHY_ISTIO_CRDS", str(default))}


@nox.session(venv_backend=PROJECT_ENV, tags=[CI])
def tests(session: nox.Session) -> None:
    """Unit, golden and black-box tests (real processes, real Envoy, real HTTP), in parallel workers;
    arguments after `--` replace the default (`nox -s tests -- tests/test_admin.py -x`)."""
    install(session)
    args = session.posargs or PYTEST_WORKERS
    session.run(sys.executable, "-m", "pytest", *args, env=crds_env(), external=True)


@nox.session(tags=[CI])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check (an environment holding ruff alone)."""
    session.install(*pins("ruff"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_backend=PROJECT_ENV, tags=[CI])
@nox.parametrize("pair", PAIRS)
def render(session: nox.Session, pair: str) -> None:
    """Render every template for a pair and validate every object (Kubernetes and Istio schemas)."""
    k8s_minor = int(pair.split("-")[0].split(".")[1])
    install(session)
    python = old_schemas_python(session) if k8s_minor <= 25 else sys.executable
    session.run(python, "-m", "meshy.validate", pair, env=crds_env(), external=True)


def run_local_demo(session: nox.Session, *pair_options: str) -> None:
    """inv demo on the local backend with its own state, address block and ingress port."""
    install(session)
    # A mesh the user keeps running is left alone.
    state = Path(session.create_tmp()) / "meshy-state"
    base, _claim = claim_address_base()  # held until the session ends
    env = {
        "MESHY_STATE": str(state),
        "MESHY_ADDRESS_BASE": os.environ.get("MESHY_ADDRESS_BASE", str(base)),
        "MESHY_INGRESS": os.environ.get("MESHY_INGRESS", f"127.0.0.1:{free_port()}"),
        "MESHY_DASHBOARD": os.environ.get("MESHY_DASHBOARD", f"127.0.0.1:{free_port()}"),
    }
    session.run(
        sys.executable, "-m", "invoke", "demo", "--backend", "local", *pair_options, "--down", env=env, external=True
    )


@nox.session(name="e2e-local", venv_backend=PROJECT_ENV)
def e2e_local(session: nox.Session) -> None:
    """The whole demo on the local backend (real Envoy, no cluster) with the default pair."""
    run_local_demo(session)


def e2e_local_pair(pair: str):
    k8s, istio = pair.split("-istio-")

    def session_function(session: nox.Session) -> None:
        run_local_demo(session, "--k8s", k8s, "--istio", istio)

    session_function.__doc__ = f"The whole demo on the local backend, behaving as Istio {istio} (Kubernetes {k8s})."
    return session_function


for _pair in PAIRS:
    nox.session(name=f"e2e-local-{_pair}", venv_backend=PROJECT_ENV, tags=[CI])(e2e_local_pair(_pair))


def docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pair_args(pair: str) -> list[str]:
    k8s, istio = pair.split("-istio-")
    return ["--k8s", k8s, "--istio", istio]


def e2e_kind(pair: str):
    def session_function(session: nox.Session) -> None:
        install(session)
        if "--dry" in session.posargs:
            session.run("inv", "--dry", "demo", "--backend", "kind", *pair_args(pair))
            session.run("inv", "--dry", "down", *pair_args(pair))
            return
        if not docker_running():
            session.error(
                f"e2e-{pair} needs a running Docker engine (plus kind and kubectl); on this machine use e2e-local, "
                f"or standins-{pair} for the same steps against recording stand-ins"
            )
        try:
            session.run("inv", "demo", "--backend", "kind", *pair_args(pair))
        finally:
            session.run("inv", "down", *pair_args(pair))

    session_function.__doc__ = (
        f"Real e2e: build kind + Istio for {pair} from nothing, run every scenario, tear down "
        "(`-- --dry` prints the plan)."
    )
    return session_function


def standins(pair: str):
    def session_function(session: nox.Session) -> None:
        from meshy.versions import select_pair
        from tests.standins import harness

        install(session)
        work = Path(session.create_tmp()).resolve() / f"standins-{pair}"
        shutil.rmtree(work, ignore_errors=True)
        base, _claim = claim_address_base()  # held until the session ends
        env = harness.standin_env(work, base, python=sys.executable)
        harness.seed_istio(work / "cache", select_pair(*pair.split("-istio-")))
        plan = session.run("inv", "--dry", "demo", "--backend", "kind", *pair_args(pair), env=env, silent=True)
        plan += session.run("inv", "--dry", "down", *pair_args(pair), env=env, silent=True)
        try:
            session.run("inv", "demo", "--backend", "kind", *pair_args(pair), env=env)
        finally:
            session.run("inv", "down", *pair_args(pair), env=env)
        planned, ran = harness.plan_commands(plan), harness.logged_commands(work / "standins")
        if planned != ran:
            session.error(f"the dry plan and the commands run differ: {harness.first_difference(planned, ran)}")
        session.log(f"the dry plan equals the {len(ran)} commands run")

    session_function.__doc__ = (
        f"e2e-{pair}'s steps against recording stand-ins for docker/kind/kubectl/istioctl over a real local "
        "mesh (not a real e2e run); checks that the dry plan equals the commands run."
    )
    return session_function


for _pair in PAIRS:
    nox.session(name=f"e2e-{_pair}", venv_backend=PROJECT_ENV)(e2e_kind(_pair))
    nox.session(name=f"standins-{_pair}", venv_backend=PROJECT_ENV, tags=[CI])(standins(_pair))


@nox.session(venv_backend=PROJECT_ENV)
def bench(session: nox.Session) -> None:
    """Speed and memory figures of the README (needs `hey`: apt-get install hey)."""
    install(session)
    session.run(sys.executable, "scripts/bench.py", *session.posargs, external=True)


@nox.session(venv_backend=PROJECT_ENV)
def reliability(session: nox.Session) -> None:
    """Failures under reloads, recovery after SIGKILLs, leftovers after down (reports/bench/bench-reliability.json)."""
    install(session)
    session.run(sys.executable, "scripts/bench.py", "reliability", external=True)
