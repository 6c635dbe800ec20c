"""registry.*: the local Docker registry (localhost:5000, mirrored into the kind nodes)."""

from invoke import task

from meshy.kind import steps
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(help=PAIR_HELP)
def up(c, k8s=None, istio=None):
    """Run the registry container, published on 127.0.0.1:5000 only."""
    with clear_errors():
        steps.registry_up(cluster_env(c, k8s, istio))


@task(help=PAIR_HELP)
def down(c, k8s=None, istio=None):
    """Remove the registry container (safe to run twice)."""
    with clear_errors():
        steps.registry_down(cluster_env(c, k8s, istio))
