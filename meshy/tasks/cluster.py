"""cluster.*: the kind cluster (1 control plane, 2 workers) for the chosen version pair."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import registry
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[registry.up], help=PAIR_HELP)
def up(c, k8s=None, istio=None):
    """Create the cluster: node image by digest, registry mirror, host ports 8080/8081/3000."""
    with clear_errors():
        steps.cluster_up(cluster_env(c, k8s, istio))


@task(help=PAIR_HELP)
def down(c, k8s=None, istio=None):
    """Delete the cluster (safe to run twice)."""
    with clear_errors():
        steps.cluster_down(cluster_env(c, k8s, istio))


@task(help=PAIR_HELP)
def status(c, k8s=None, istio=None):
    """Nodes and pods of the cluster, or why there are none."""
    with clear_errors():
        steps.cluster_status(cluster_env(c, k8s, istio))
