"""local.*: the walkthrough's mesh as local processes with real Envoy proxies (no cluster)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING

from invoke import Context

from meshy.tasks.common import PAIR_HELP, TaskError, is_dry, pair_of
from meshy.tasks.runner import task

if TYPE_CHECKING:
    from meshy.local.backend import LocalBackend
    from meshy.local.statedir import StateDir

STATE_HELP = {
    "state": "state directory of the local mesh (default .meshy/; env MESHY_STATE)",
    "ingress": "address of the ingress gateway, HOST:PORT on loopback (default 127.0.0.1:8080; env MESHY_INGRESS)",
}
FILE_HELP = "a YAML file, a directory of YAML files, or - for standard input; repeat -f for several"
OUTPUTS = ("table", "json")
DASHBOARD_HELP = {
    "dashboard": "address of the dashboard and /metrics, HOST:PORT on loopback (default 127.0.0.1:20001; env MESHY_DASHBOARD)"
}


class NotRunning(TaskError):
    """Nothing to show: like kubectl get of a missing object, a non-zero exit."""


def backend(state: str | None = None, ingress: str | None = None, dashboard: str | None = None) -> LocalBackend:
    from meshy.local.backend import LocalBackend, LocalConfig

    return LocalBackend(LocalConfig.from_env(state, ingress, dashboard=dashboard))


def state_dir(state: str | None = None, ingress: str | None = None) -> StateDir:
    """The state directory alone: enough to stop a mesh, or to see that none is there."""
    from meshy.local.statedir import LocalConfig, StateDir

    return StateDir(LocalConfig.from_env(state, ingress))


@task(help={**PAIR_HELP, **STATE_HELP, **DASHBOARD_HELP})
def up(c: Context, k8s=None, istio=None, state=None, ingress=None, dashboard=None):
    """Start minimal-service v1/v2, bounced-service, the external service and both gateways locally.

    Returns once a request through the ingress gateway succeeds, then prints
    where everything listens. Against a running mesh of the same pair it does
    nothing; another pair or ingress address is refused.
    """
    from meshy.render import build_dir, render_all

    pair = pair_of(k8s, istio)
    local = backend(state, ingress, dashboard)
    local.refuse_other_mesh(pair, ingress_asked=bool(ingress or os.environ.get("MESHY_INGRESS")))
    if is_dry(c):
        print(f"would start the local mesh for {pair.name} in {local.dir} (ingress {local.ingress_url})")
        return
    seconds = local.up(pair)
    written = render_all(pair, build_dir(pair))
    print_table(local)
    print(f"\nmanifests for applying by hand ({len(written)} files): {build_dir(pair)}/")
    if seconds:
        print(f"\nfirst 200 through {local.ingress_url} after {seconds:.2f}s; try:")
        print(f"  curl -H 'Host: minimal.svc.kind.org' {local.ingress_url}/")
    print(f"\ndashboard (versioned graph, /metrics): {local.layout.dashboard_url}/")


@task(help=STATE_HELP)
def dashboard(c: Context, state=None, ingress=None):
    """Print the URL of the running mesh's dashboard (Kiali-like graph) and of its Istio metrics."""
    local = backend(state, ingress)
    local.require_up()
    print(f"{local.layout.dashboard_url}/")
    print(f"{local.layout.dashboard_url}/metrics")


def change(c: Context, verb: str, files: list[str], state: str | None, ingress: str | None) -> None:
    """Apply or delete the resources of the manifests and print one line per resource."""
    from meshy.manifest_input import combined, read_manifests

    local = backend(state, ingress)
    manifest = combined(read_manifests(files, sys.stdin.buffer), verb)
    if is_dry(c):
        print(f"would {verb} the resources of {manifest.source} in the local mesh at {local.dir}")
        return
    for line in getattr(local, verb)(manifest.text, manifest.source):
        print(line)


@task(iterable=["file"], help={"file": FILE_HELP, **STATE_HELP})
def apply(c: Context, file=None, state=None, ingress=None):
    """Create or update resources, like kubectl apply -f; refused whole if any is invalid."""
    change(c, "apply", file, state, ingress)


@task(iterable=["file"], help={"file": FILE_HELP, **STATE_HELP})
def delete(c: Context, file=None, state=None, ingress=None):
    """Delete the resources the manifests name, like kubectl delete -f."""
    change(c, "delete", file, state, ingress)


@task(help={"output": "table (default) or json", **STATE_HELP})
def status(c: Context, output="table", state=None, ingress=None):
    """Workloads, pods, addresses, readiness and processes; exits 1 when the mesh is not running."""
    import json

    if output not in OUTPUTS:
        raise TaskError(f"-o {output} is not known; use -o table or -o json.")
    local = state_dir(state, ingress)
    running = local.is_up()
    problem = local.problem()
    if output == "json":
        print(json.dumps(local.status_document(), indent=1))
    if not running and problem is None:
        raise NotRunning(f"the local mesh is not running (state directory {local.dir}); start it with inv local.up.")
    if output == "table" and local.state_file.exists():
        print_table(local)
    if problem:
        print(f"\n{problem}")


@task(
    help={
        "name": "workload (its pods' app logs), pod, gateway or program name (see inv local.status)",
        "tail": "how many last lines of each log",
        "access": "the Istio-format access logs of every proxy of the workload instead of the programs' logs",
        "follow": "keep printing lines as they are written (Ctrl-C to stop)",
        **STATE_HELP,
    }
)
def logs(c: Context, name, tail=40, access=False, follow=False, state=None, ingress=None):
    """The last lines of a workload's logs: minimal-service, a pod, proxy_<pod>, istio-ingressgateway, minimal-external."""
    from meshy.local.telemetry import accesslog

    local = backend(state, ingress)
    paths = local.access_logs(name) if access else local.log_files(name)
    for path in paths:
        print(f"==> {path} <==")
        print("\n".join(accesslog.last_lines(path, int(tail))))
    if follow:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends following, as with tail -f
            tails = accesslog.tails_at_end(paths)
            accesslog.follow(tails, lambda line: print(line, flush=True), stop=threading.Event())


@task(help=STATE_HELP)
def down(c: Context, state=None, ingress=None):
    """Stop every process of the local mesh and remove its state; says what was there. Safe to run twice."""
    local = state_dir(state, ingress)
    if is_dry(c):
        print(f"would stop the local mesh and remove {local.dir}")
        return
    print(local.stop().summary(local.dir))


def print_table(local: StateDir) -> None:
    rows = local.status()
    header = ("WORKLOAD", "POD", "ADDRESS", "READY", "PROCESSES")
    table = [header] + [(r.workload, r.pod, r.address, "yes" if r.ready else "no", r.processes) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
