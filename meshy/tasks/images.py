"""images.*: the minimal-service image, pushed to the local registry."""

from invoke import task

from meshy.kind import steps
from meshy.tasks import registry
from meshy.tasks.common import PAIR_HELP, clear_errors, cluster_env


@task(pre=[registry.up], help={**PAIR_HELP, "rebuild": "build and push even if the image exists"})
def build(c, k8s=None, istio=None, rebuild=False):
    """docker build minimal_service/Dockerfile, tag and push localhost:5000/minimal-service:v1.0.0."""
    with clear_errors():
        steps.images_build(cluster_env(c, k8s, istio), rebuild)
