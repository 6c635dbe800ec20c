"""local.*: the walkthrough's mesh as local processes with real Envoy proxies (no cluster)."""

from __future__ import annotations

from pathlib import Path

from invoke import Context, task

from meshy.local.backend import LocalBackend, LocalConfig
from meshy.render import build_dir, render_all
from meshy.tasks.common import PAIR_HELP, TaskError, clear_errors, is_dry, pair_of

STATE_HELP = {
    "state": "state directory of the local mesh (default .meshy/; env MESHY_STATE)",
    "ingress": "address of the ingress gateway, HOST:PORT on loopback (default 127.0.0.1:8080; env MESHY_INGRESS)",
}


def backend(state: str | None = None, ingress: str | None = None) -> LocalBackend:
    with clear_errors():
        return LocalBackend(LocalConfig.from_env(state, ingress))


def read_manifest(path: str) -> bytes:
    # Bytes: the parser tells text that is not UTF-8 from YAML in one line of its own.
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TaskError(f"cannot read {path} ({error.strerror}); pass an existing YAML file with -f.") from None


@task(help={**PAIR_HELP, **STATE_HELP})
def up(c: Context, k8s=None, istio=None, state=None, ingress=None):
    """Start minimal-service v1/v2, bounced-service, the external service and both gateways locally.

    Returns once a request through the ingress gateway succeeds, then prints
    where everything listens. Running it again against a running mesh does nothing.
    """
    pair = pair_of(k8s, istio)
    local = backend(state, ingress)
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
    help={"name": "pod, gateway or program name (see inv local.status)", "lines": "how many last lines", **STATE_HELP}
)
def logs(c: Context, name, lines=40, state=None, ingress=None):
    """The last lines of a workload's log (app_<pod>, proxy_<pod>, istio-ingressgateway, minimal-external)."""
    local = backend(state, ingress)
    with clear_errors():
        path = local.log_file(name)
    print(f"==> {path} <==")
    print("\n".join(path.read_text(errors="replace").splitlines()[-int(lines) :]))


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
