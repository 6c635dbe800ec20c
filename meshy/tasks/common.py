"""What every task module shares: version-pair options and turning errors into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Context
from invoke.exceptions import Exit

from meshy.versions import Pair, VersionError, select_pair

PAIR_HELP = {
    "k8s": "Kubernetes minor version of the pair, e.g. 1.19 (default: newest pair; env MESHY_K8S)",
    "istio": "Istio minor version of the pair, e.g. 1.8 (default: newest pair; env MESHY_ISTIO)",
}


class TaskError(RuntimeError):
    """A task cannot go on; the message names the cause and the fix."""


@contextmanager
def clear_errors() -> Iterator[None]:
    """Known failures end the task with their one-sentence message and exit code 1."""
    from meshy.download import DownloadError
    from meshy.kind.context import ClusterError
    from meshy.local.backend import LocalError
    from meshy.local.resources import ResourceError
    from meshy.scenarios.backends import ScenarioError

    try:
        yield
    except (TaskError, VersionError, LocalError, ResourceError, ClusterError, DownloadError, ScenarioError) as error:
        raise Exit(f"error: {error}", code=1) from None


def pair_of(k8s: str | None, istio: str | None) -> Pair:
    with clear_errors():
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
    for flag, variable in (("--k8s", "MESHY_K8S"), ("--istio", "MESHY_ISTIO")):
        for index, arg in enumerate(argv):
            if arg == flag and index + 1 < len(argv):
                environ[variable] = argv[index + 1]
            elif arg.startswith(flag + "="):
                environ[variable] = arg.split("=", 1)[1]


def cluster_env(c: Context, k8s: str | None = None, istio: str | None = None):
    """The cluster path's step environment; under --dry its runner prints each command instead of running it."""
    import os

    from meshy.console import Console
    from meshy.kind.context import Env, PrintRunner, ShellRunner
    from meshy.render import Ports, RenderOptions

    pair = pair_of(k8s, istio)
    dry = is_dry(c)
    with clear_errors():
        try:
            ports = Ports.from_env(os.environ.get("MESHY_HOST_PORTS"))
        except ValueError as error:
            raise TaskError(str(error)) from None
    console = Console(stream=sys.stdout, planning=True) if dry else Console()
    return Env(pair, console, PrintRunner() if dry else ShellRunner(), dry, RenderOptions.for_kind(ports))
