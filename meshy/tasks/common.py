"""What every task module shares: version-pair options and turning errors into one clear line."""

from __future__ import annotations

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
    from meshy.local.backend import LocalError
    from meshy.local.resources import ResourceError

    try:
        yield
    except (TaskError, VersionError, LocalError, ResourceError, FileNotFoundError) as error:
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
