"""istio.*: download the pair's Istio release, install it with both gateways, uninstall."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import cluster
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(help=PAIR_HELP)
def download(c, k8s=None, istio=None):
    """Fetch the release archive (sha256-verified, cached under .cache/, written atomically) and unpack it."""
    with clear_errors():
        steps.istio_download(cluster_env(c, k8s, istio))


@task(pre=[cluster.up, download], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """istioctl install: default profile plus the egress gateway; wait for istiod and both gateways."""
    with clear_errors():
        steps.istio_install(cluster_env(c, k8s, istio))


@task(help=PAIR_HELP)
def uninstall(c, k8s=None, istio=None):
    """Remove Istio and the istio-system namespace."""
    with clear_errors():
        steps.istio_uninstall(cluster_env(c, k8s, istio))
