"""addons.*: Prometheus, Grafana, Jaeger and Kiali from the release's samples/addons."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import istio
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[istio.install], help=PAIR_HELP)
def install(c, k8s=None, istio=None):
    """Apply the add-ons (retrying until Kiali's CRDs exist), expose Kiali/Grafana, route kiali.istio.kind.org."""
    with clear_errors():
        steps.addons_install(cluster_env(c, k8s, istio))
