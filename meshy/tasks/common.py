"""What every task module shares: version-pair options, the pair, the cluster path's environment.

Imports stay light here and in every task module: `inv --list` loads them all,
so the heavy modules (the backends, Jinja, the Kubernetes client) are imported
inside the task that needs them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from invoke import Context

from meshy.errors import MeshyError
from meshy.tasks.runner import SHORT_FLAGS

if TYPE_CHECKING:
    from meshy.versions import Pair

PAIR_HELP = {
    "k8s": "Kubernetes minor version of the pair, e.g. 1.19 (default: newest pair; env MESHY_K8S)",
    "istio": "Istio minor version of the pair, e.g. 1.8 (default: newest pair; env MESHY_ISTIO)",
}


class TaskError(MeshyError):
    """A task cannot go on; the message names the cause and the fix."""


def pair_of(k8s: str | None, istio: str | None) -> Pair:
    from meshy.versions import VersionError, select_pair

    pair = select_pair(k8s, istio)
    if not pair.supported():
        low, high = pair.istio_k8s_range
        raise VersionError(f"Istio {pair.istio} supports Kubernetes {low}-{high}, not {pair.k8s}.")
    return pair


def is_dry(c: Context) -> bool:
    return bool(c.config.run.dry)


def export_pair_options(argv: list[str], environ: dict[str, str]) -> None:
    """Copy --k8s/--istio from the command line into MESHY_K8S/MESHY_ISTIO.

    invoke calls pre-tasks without arguments, so `inv services.deploy --k8s 1.19`
    would otherwise build the default pair's cluster first.
    """
    for name, variable in (("k8s", "MESHY_K8S"), ("istio", "MESHY_ISTIO")):
        flags = (f"--{name}", f"-{SHORT_FLAGS[name]}")
        for index, arg in enumerate(argv):
            if arg in flags and index + 1 < len(argv):
                environ[variable] = argv[index + 1]
            elif arg.startswith(flags[0] + "="):
                environ[variable] = arg.split("=", 1)[1]


def cluster_env(c: Context, k8s: str | None = None, istio: str | None = None):
    """The cluster path's step environment; under --dry its runner prints each command instead of running it."""
    import os

    from meshy.console import Console
    from meshy.kind.context import Env, PrintRunner, ShellRunner
    from meshy.render import Ports, RenderOptions

    pair = pair_of(k8s, istio)
    try:
        ports = Ports.from_env(os.environ.get("MESHY_HOST_PORTS"))
    except ValueError as error:
        raise TaskError(str(error)) from None
    dry = is_dry(c)
    console = Console(stream=sys.stdout, planning=True) if dry else Console()
    return Env(pair, console, PrintRunner() if dry else ShellRunner(), dry, RenderOptions.for_kind(ports))


def cluster_step(c: Context, step: str, k8s: str | None, istio: str | None, *args: object) -> None:
    """Run one step of meshy.kind.steps for the pair (imported here: only cluster tasks pay for it)."""
    from meshy.kind import steps

    getattr(steps, step)(cluster_env(c, k8s, istio), *args)
