"""addons.*: Prometheus, Grafana, Jaeger and Kiali from the release's samples/addons."""

from meshy.tasks import istio
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[istio.install], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """Apply the add-ons (retrying until Kiali's CRDs exist), expose Kiali/Grafana, route kiali.istio.kind.org."""
    cluster_step(c, "addons_install", k8s, istio)
