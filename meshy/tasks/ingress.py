"""ingress.*: the NGINX ingress controller for kind (optional in `inv up`)."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import cluster
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[cluster.up], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """Install ingress-nginx's kind manifest and minimal-service's Ingress; wait for the controller."""
    with clear_errors():
        steps.ingress_install(cluster_env(c, k8s, istio))
