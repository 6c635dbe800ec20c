"""services.*: minimal-service, bounced-service (70% 500s) and minimal-service-v2 in the mesh."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import images, mesh
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[mesh.enable, images.build], help=PAIR_HELP)
def deploy(c, k8s=None, istio=None):
    """Apply the three Deployments and Services, wait for the rollouts, check every pod runs 2/2."""
    with clear_errors():
        steps.services_deploy(cluster_env(c, k8s, istio))
