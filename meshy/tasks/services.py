"""services.*: minimal-service, bounced-service (70% 500s) and minimal-service-v2 in the mesh."""

from meshy.tasks import images, mesh
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[mesh.enable, images.build], help=PAIR_HELP)
def deploy(c, k8s=None, istio=None):
    """Apply the three Deployments and Services, wait for the rollouts, check every pod runs 2/2."""
    cluster_step(c, "services_deploy", k8s, istio)
