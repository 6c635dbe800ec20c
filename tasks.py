"""kube-meshy tasks: `inv --list` for the manual, `inv --help TASK` for one task.

Each collection is a module under meshy/tasks/; the logic they call lives in
the meshy package and is tested without invoke.
"""

import os
import sys

from invoke import Collection, Executor

from meshy.tasks import addons, cluster, images, ingress, istio, local, mesh, registry, scenario, services
from meshy.tasks.common import PAIR_HELP, cluster_env, export_pair_options
from meshy.tasks.runner import task

export_pair_options(sys.argv, os.environ)


# Everything `up` needs, in the walkthrough's order.
UP_CHAIN = [registry.up, cluster.up, istio.install, addons.install, mesh.enable, images.build, services.deploy]


@task(
    pre=UP_CHAIN,
    help={**PAIR_HELP, "with_ingress": "also install the NGINX ingress controller"},
)
def up(c, k8s=None, istio=None, with_ingress=False):
    """Everything of the walkthrough on kind, in order: registry, cluster, Istio, add-ons, injection, image, services."""
    from meshy.kind import steps

    env = cluster_env(c, k8s, istio)
    if with_ingress:
        steps.ingress_install(env)
    steps.baseline(env)
    if not env.dry:
        ports = env.ports
        print(
            f"kind environment ready: curl -H 'Host: minimal.svc.kind.org' http://127.0.0.1:{ports.ingress_host}/"
            f"  (Kiali :{ports.kiali_host}, Grafana :{ports.grafana_host})"
        )


@task(name="down", help=PAIR_HELP)
def down_(c, k8s=None, istio=None):
    """Remove the cluster, the registry and the external service container; safe to run twice."""
    from meshy.kind import steps

    env = cluster_env(c, k8s, istio)
    steps.external_down(env)
    steps.cluster_down(env)
    steps.registry_down(env)


@task(help={**scenario.HELP, "down": "tear the backend down afterwards (default: leave it running)"})
def demo(c, backend="local", k8s=None, istio=None, state=None, down=False):
    """The whole walkthrough: bring the backend up, run every scenario, print one summary table."""
    from meshy.scenarios import runner

    if backend == "kind":
        # Task.__call__ runs a task's body only (invoke/tasks.py); the Executor runs its pre-tasks too.
        Executor(namespace, config=c.config).execute(("up", {"k8s": k8s, "istio": istio}))
    results = scenario.run_scenarios(c, list(runner.SCENARIOS), backend, k8s, istio, state)
    if results:
        print("\n" + runner.summary_table(results))
    if down and (backend == "kind" or not c.config.run.dry):
        if backend == "local":
            local.down(c, state=state)
        else:
            down_(c, k8s=k8s, istio=istio)
    scenario.judge(results)


namespace = Collection(up, down_, demo)
for module in (registry, cluster, ingress, istio, addons, mesh, images, services, scenario, local):
    namespace.add_collection(Collection.from_module(module))
