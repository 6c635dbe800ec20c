"""ingress.*: the NGINX ingress controller for kind (optional in `inv up`)."""

from meshy.tasks import cluster
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[cluster.up], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """Install ingress-nginx's kind manifest and minimal-service's Ingress; wait for the controller."""
    cluster_step(c, "ingress_install", k8s, istio)
