"""images.*: the minimal-service image, pushed to the local registry."""

from meshy.tasks import registry
from meshy.tasks.common import PAIR_HELP, cluster_step
from meshy.tasks.runner import task


@task(pre=[registry.up], help={**PAIR_HELP, "rebuild": "build and push even if the image exists"})
def build(c, k8s=None, istio=None, rebuild=False):
    """docker build minimal_service/Dockerfile, tag and push localhost:5000/minimal-service:v1.0.0."""
    cluster_step(c, "images_build", k8s, istio, rebuild)
