"""mesh.*: sidecar injection for the default namespace."""

from meshy.tasks import istio
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[istio.install], help=PAIR_HELP)
def enable(c, k8s=None, istio=None):
    """Label namespace default with istio-injection=enabled."""
    cluster_step(c, "mesh_enable", k8s, istio)
