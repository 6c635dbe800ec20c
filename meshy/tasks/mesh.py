"""mesh.*: sidecar injection for the default namespace."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import istio
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[istio.install], help=PAIR_HELP)
def enable(c, k8s=None, istio=None):
    """Label namespace default with istio-injection=enabled."""
    with clear_errors():
        steps.mesh_enable(cluster_env(c, k8s, istio))
