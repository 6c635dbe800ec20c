"""Workloads of the local mesh: pods from Deployments, the gateways, the external service.

Each pod gets its own loopback addresses (Linux routes all of 127.0.0.0/8 to
lo), so every app keeps its manifest's port, as in a cluster.
"""

from __future__ import annotations

import hashlib

from meshy.local.build import BuildError, gateway_target_port
from meshy.local.layout import Layout
from meshy.local.model import GatewayPod, Pod
from meshy.local.origination import pod_mounts
from meshy.local.resources import Resource, ResourceSet
from meshy.local.security import TLS_MODE_LABEL

# The ingress gateway's TCP port of Istio's demo profile (manifests/profiles/demo.yaml at 1.8.6,
# manifests/charts/default/files/profile-demo.yaml at 1.30.3), which the TCP Traffic Shifting task uses;
# the kind path adds it to the default profile's ports (manifests/templates/kind/istio-operator.yaml.j2).
TCP_PORT = 31400
# The image the walkthrough builds; the local backend runs it as `python -m minimal_service`.
RUNNABLE_IMAGE = "minimal-service"


def gateways(layout: Layout) -> list[GatewayPod]:
    """The two gateways istioctl installs (egress enabled), as the kind path does."""
    egress = layout.gateway_ip(1)
    ingress_binds = {80: (layout.ingress_host, layout.ingress_port)}
    if layout.ingress_tls_port:
        ingress_binds[443] = (layout.ingress_host, layout.ingress_tls_port)
    if layout.ingress_tcp_port:
        ingress_binds[TCP_PORT] = (layout.ingress_host, layout.ingress_tcp_port)
    return [
        GatewayPod(
            "istio-ingressgateway",
            "istio-system",
            {"app": "istio-ingressgateway", "istio": "ingressgateway"},
            layout.gateway_ip(0),
            ingress_binds,
        ),
        GatewayPod(
            "istio-egressgateway",
            "istio-system",
            {"app": "istio-egressgateway", "istio": "egressgateway"},
            egress,
            {80: (egress, gateway_target_port(80))},
        ),
    ]


def pod_names(deployment: Resource) -> list[str]:
    """Kubernetes-like pod names: deployment, template hash, replica suffix."""
    template = repr(sorted(deployment.spec.get("template", {}).items())).encode()
    digest = hashlib.sha256(deployment.name.encode() + template).hexdigest()
    replicas = deployment.spec.get("replicas", 1)
    return [
        f"{deployment.name}-{digest[:10]}-{hashlib.sha256(f'{digest}{i}'.encode()).hexdigest()[:5]}"
        for i in range(replicas)
    ]


def pods(
    resources: ResourceSet, allocation: dict[str, int], layout: Layout, busy: frozenset[int] = frozenset()
) -> tuple[list[Pod], dict[str, int]]:
    """The pods of every Deployment, and the address allocation that places them.

    A pod keeps its index across applies; new pods take the lowest free one
    that is not `busy` (held by a pod still running during a rollout).
    """
    result: list[Pod] = []
    wanted: list[tuple[str, Resource]] = []
    for deployment in resources.of_kind("Deployment"):
        check_deployment(deployment)
        wanted += [(name, deployment) for name in pod_names(deployment)]
    kept = {name: index for name, index in allocation.items() if name in dict(wanted)}
    used = set(kept.values()) | busy
    for name, deployment in wanted:
        if name not in kept:
            index = next(i for i in range(len(used) + 1) if i not in used)
            kept[name] = index
            used.add(index)
        result.append(make_pod(name, deployment, layout.pod_ip(kept[name]), layout.app_ip(kept[name])))
    return result, kept


def rollout_steps(
    starting: list[Pod], retiring: list[Pod], replicas: dict[str, int]
) -> list[tuple[list[Pod], list[Pod]]]:
    """Steps of (pods to start, pods to retire), as a RollingUpdate Deployment moves.

    Kubernetes' defaults (maxSurge 25% rounded up, maxUnavailable 25% rounded
    down; pkg/controller/deployment/rolling.go): a rolled Deployment starts at
    most ceil(25%) new pods at a time, and retires as many old ones only once
    those serve, so none is ever unavailable; old pods beyond the new replica
    count go with the first step. A Deployment without old pods (new or scaled
    up) starts all at once; one without new pods retires all at once.
    """
    by_deployment: dict[str, tuple[list[Pod], list[Pod]]] = {}
    for pod in starting:
        by_deployment.setdefault(pod.deployment, ([], []))[0].append(pod)
    for pod in retiring:
        by_deployment.setdefault(pod.deployment, ([], []))[1].append(pod)
    steps: list[tuple[list[Pod], list[Pod]]] = []
    for deployment, (new, old) in by_deployment.items():
        wanted = replicas.get(deployment, 0)
        size = max(1, -(-wanted // 4)) if new and old else max(len(new), len(old))
        # Old pods beyond the new replica count are not needed for availability:
        # they leave with the first step.
        excess = max(0, len(old) - wanted) if new else 0
        batches = [(new[:size], old[: excess + size])]
        batches += [
            (new[first : first + size], old[excess + first : excess + first + size])
            for first in range(size, max(len(new), len(old) - excess), size)
        ]
        for number, (start, retire) in enumerate(batches):
            if number == len(steps):
                steps.append(([], []))
            steps[number][0].extend(start)
            steps[number][1].extend(retire)
    return steps


def check_deployment(deployment: Resource) -> None:
    spec = deployment.spec
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    if len(containers) != 1:
        raise BuildError(f"{deployment.key}: the local backend runs exactly one container per pod")
    image = containers[0].get("image", "")
    if image.rsplit("/", 1)[-1].split(":")[0].split("@")[0] != RUNNABLE_IMAGE:
        raise BuildError(
            f"{deployment.key}: image {image!r} cannot run locally; "
            "the local backend runs only the minimal-service image"
        )
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    selector = spec.get("selector", {}).get("matchLabels", {})
    if not selector or not selector.items() <= labels.items():
        raise BuildError(f"{deployment.key}: spec.selector.matchLabels must match the template's labels")


def make_pod(name: str, deployment: Resource, ip: str, app_ip: str) -> Pod:
    template = deployment.spec["template"]
    container = template["spec"]["containers"][0]
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    return Pod(
        name=name,
        namespace=deployment.namespace,
        deployment=deployment.name,
        labels=dict(template.get("metadata", {}).get("labels", {})),
        ip=ip,
        app_ip=app_ip,
        ports=tuple(p["containerPort"] for p in container.get("ports", [])),
        env={e["name"]: e.get("value", "") for e in container.get("env", [])},
        image=container["image"],
        health_path=probe.get("path"),
        service_account=template["spec"].get("serviceAccountName") or "default",
        # Istio's injector labels the pod security.istio.io/tlsMode, keeping a value the template sets
        # (manifests/charts/istio-control/istio-discovery/files/injection-template.yaml at 1.30.3).
        tls_mode=template.get("metadata", {}).get("labels", {}).get(TLS_MODE_LABEL, "istio"),
        mounts=pod_mounts(deployment, template.get("metadata", {}).get("annotations") or {}),
    )
