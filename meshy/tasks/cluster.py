"""cluster.*: the kind cluster (1 control plane, 2 workers) for the chosen version pair."""

from meshy.tasks import registry
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[registry.up], help=PAIR_HELP)
def up(c, k8s=None, istio=None):
    """Create the cluster: node image by digest, registry mirror, host ports 8080/8081/3000."""
    cluster_step(c, "cluster_up", k8s, istio)


@task(help=PAIR_HELP)
def down(c, k8s=None, istio=None):
    """Delete the cluster (safe to run twice)."""
    cluster_step(c, "cluster_down", k8s, istio)


@task(help=PAIR_HELP)
def status(c, k8s=None, istio=None):
    """Nodes and pods of the cluster, or why there are none."""
    cluster_step(c, "cluster_status", k8s, istio)
