"""istio.*: download the pair's Istio release, install it with both gateways, uninstall."""

from meshy.tasks import cluster
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(help=PAIR_HELP)
def download(c, k8s=None, istio=None):
    """Fetch the release archive (sha256-verified, cached under .cache/, written atomically) and unpack it."""
    cluster_step(c, "istio_download", k8s, istio)


@task(pre=[cluster.up, download], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """istioctl install: default profile plus the egress gateway; wait for istiod and both gateways."""
    cluster_step(c, "istio_install", k8s, istio)


@task(help=PAIR_HELP)
def uninstall(c, k8s=None, istio=None):
    """Remove Istio and the istio-system namespace."""
    cluster_step(c, "istio_uninstall", k8s, istio)
