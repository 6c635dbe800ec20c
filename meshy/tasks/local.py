"""local.*: the walkthrough's mesh as local processes with real Envoy proxies (no cluster)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from invoke import Context, task

from meshy.local.backend import LocalBackend, LocalConfig
from meshy.local.telemetry import accesslog
from meshy.render import build_dir, render_all
from meshy.tasks.common import PAIR_HELP, TaskError, clear_errors, is_dry, pair_of

STATE_HELP = {
    "state": "state directory of the local mesh (default .meshy/; env MESHY_STATE)",
    "ingress": "address of the ingress gateway, HOST:PORT on loopback (default 127.0.0.1:8080; env MESHY_INGRESS)",
}
DASHBOARD_HELP = {
    "dashboard": "address of the dashboard and /metrics, HOST:PORT on loopback (default 127.0.0.1:20001; env MESHY_DASHBOARD)"
}


def backend(state: str | None = None, ingress: str | None = None, dashboard: str | None = None) -> LocalBackend:
    with clear_errors():
        return LocalBackend(LocalConfig.from_env(state, ingress, dashboard=dashboard))


def read_manifest(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        raise TaskError(f"cannot read {path} ({error.strerror}); pass an existing YAML file with -f.") from None


@task(help={**PAIR_HELP, **STATE_HELP, **DASHBOARD_HELP})
def up(c: Context, k8s=None, istio=None, state=None, ingress=None, dashboard=None):
    """Start minimal-service v1/v2, bounced-service, the external service and both gateways locally.

    Returns once a request through the ingress gateway succeeds, then prints
    where everything listens. Running it again against a running mesh does nothing.
    """
    pair = pair_of(k8s, istio)
    local = backend(state, ingress, dashboard)
    if is_dry(c):
        print(f"would start the local mesh for {pair.name} in {local.dir} (ingress {local.ingress_url})")
        return
    with clear_errors():
        seconds = local.up(pair)
    written = render_all(pair, build_dir(pair))
    print_status(local)
    print(f"\nmanifests for applying by hand ({len(written)} files): {build_dir(pair)}/")
    if seconds:
        print(f"\nfirst 200 through {local.ingress_url} after {seconds:.2f}s; try:")
        print(f"  curl -H 'Host: minimal.svc.kind.org' {local.ingress_url}/")
    print(f"\ndashboard (versioned graph, /metrics): {local.layout.dashboard_url}/")


@task(help=STATE_HELP)
def dashboard(c: Context, state=None, ingress=None):
    """Print the URL of the running mesh's dashboard (Kiali-like graph) and of its Istio metrics."""
    local = backend(state, ingress)
    with clear_errors():
        local.require_up()
    print(f"{local.layout.dashboard_url}/")
    print(f"{local.layout.dashboard_url}/metrics")


def change(c: Context, verb: str, file: str, state: str | None, ingress: str | None) -> None:
    """Apply or delete the resources of a file and print one line per resource."""
    local = backend(state, ingress)
    with clear_errors():
        text = read_manifest(file)
        if is_dry(c):
            print(f"would {verb} the resources of {file} in the local mesh at {local.dir}")
            return
        for line in getattr(local, verb)(text, file):
            print(line)


@task(help={"file": "YAML file (one or more documents) to apply", **STATE_HELP})
def apply(c: Context, file, state=None, ingress=None):
    """Create or update resources from a file, like kubectl apply -f; refused whole if any is invalid."""
    change(c, "apply", file, state, ingress)


@task(help={"file": "YAML file whose resources to delete", **STATE_HELP})
def delete(c: Context, file, state=None, ingress=None):
    """Delete the resources named in a file, like kubectl delete -f."""
    change(c, "delete", file, state, ingress)


@task(help=STATE_HELP)
def status(c: Context, state=None, ingress=None):
    """A table of workloads, pods, addresses, readiness and processes."""
    local = backend(state, ingress)
    if not local.is_up():
        print(f"the local mesh is not running (state directory {local.dir})")
        return
    print_status(local)


@task(
    help={
        "name": "pod, gateway or program name (see inv local.status); a workload name with --access",
        "lines": "how many last lines",
        "access": "the Istio-format access logs of every proxy of the workload instead of the program's log",
        "follow": "keep printing lines as they are written (Ctrl-C to stop)",
        **STATE_HELP,
    }
)
def logs(c: Context, name, lines=40, access=False, follow=False, state=None, ingress=None):
    """The last lines of a workload's log (app_<pod>, proxy_<pod>, istio-ingressgateway, minimal-external)."""
    local = backend(state, ingress)
    with clear_errors():
        paths = local.access_logs(name) if access else [local.log_file(name)]
    for path in paths:
        print(f"==> {path} <==")
        text = path.read_text(errors="replace").splitlines() if path.exists() else []
        print("\n".join(text[max(0, len(text) - int(lines)) :]))
    if follow:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends following, as with tail -f
            tails = accesslog.tails_at_end(paths)
            accesslog.follow(tails, lambda line: print(line, flush=True), stop=threading.Event())


@task(help=STATE_HELP)
def down(c: Context, state=None, ingress=None):
    """Stop every process of the local mesh and remove its state; safe to run twice."""
    local = backend(state, ingress)
    if is_dry(c):
        print(f"would stop the local mesh and remove {local.dir}")
        return
    with clear_errors():
        leftovers = local.down()
    extra = f" (also ended {len(leftovers)} orphaned processes)" if leftovers else ""
    print(f"local mesh stopped; {local.dir} removed{extra}")


def print_status(local: LocalBackend) -> None:
    rows = local.status()
    header = ("WORKLOAD", "POD", "ADDRESS", "READY", "PROCESSES")
    table = [header] + [(r.workload, r.pod, r.address, "yes" if r.ready else "no", r.processes) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
