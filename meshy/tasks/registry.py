"""registry.*: the local Docker registry (localhost:5000, mirrored into the kind nodes)."""

from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(help=PAIR_HELP)
def up(c, k8s=None, istio=None):
    """Run the registry container, published on 127.0.0.1:5000 only."""
    cluster_step(c, "registry_up", k8s, istio)


@task(help=PAIR_HELP)
def down(c, k8s=None, istio=None):
    """Remove the registry container (safe to run twice)."""
    cluster_step(c, "registry_down", k8s, istio)
