"""tcp-traffic-shifting: a `tcp` route on the ingress gateway's TCP port splits connections between versions.

As istio.io's TCP Traffic Shifting task: all connections to v1, then 80/20.
The backend behind is minimal-service v1 and v2 through a Service whose port
Istio treats as TCP; each connection carries one request, so the answering
pod names the version each connection went to.
"""

from __future__ import annotations

import dataclasses

from meshy.console import Console
from meshy.metrics import istio
from meshy.metrics.prometheus import Sample
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.checks import split_check, with_detail
from meshy.scenarios.traffic_shift import sample_size, version_of
from meshy.scenarios.verdict import ALPHA, POWER, Phase, Report

ROUTE = "istio/tcp-traffic-shifting.yaml.j2"
SERVICE_TEMPLATE = "services/minimal-tcp-service.yaml.j2"
V2 = "services/minimal-service-v2.yaml.j2"  # part of the baseline; applied again in case it was removed
GATEWAY, SERVICE = "istio-ingressgateway", "minimal-tcp"
STEPS = ((100, 0), (80, 20))
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def tcp_targets(config_dump: object) -> dict[str, int]:
    """subset -> weight of every tcp_proxy in a config dump that sends to minimal-tcp."""
    found: dict[str, int] = {}
    stack = [config_dump]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith(TCP_PROXY):
                clusters = node.get("weighted_clusters", {}).get("clusters") or [
                    {"name": node.get("cluster", ""), "weight": 100}
                ]
                for cluster in clusters:
                    parts = cluster["name"].split("|")
                    if len(parts) == 4 and parts[3].split(".")[0] == SERVICE:
                        found[parts[2]] = int(cluster.get("weight", 0))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def versions(samples: list[Sample]) -> dict[str, int]:
    """Connections the ingress gateway opened to minimal-tcp per destination_version (Istio's TCP metric)."""
    counts = istio.requests_by(
        samples, SERVICE, ("destination_version",), metric=istio.TCP_OPENED, reporter="source", source_workload=GATEWAY
    )
    return {version: n for (version,), n in counts.items()}


def answered_by(pods: list[str]) -> dict[str, int]:
    counts = {"v1": 0, "v2": 0, "failed": 0}
    for pod in pods:
        counts[version_of(pod) or "failed"] += 1
    return counts


def split_step(backend: Backend, console: Console, v1: int, v2: int) -> tuple[dict[str, int], dict[str, int]]:
    """The split as the gateway's istio_tcp_connections_opened_total counted it, and as the answers say."""
    with console.step(f"apply the tcp route {v1}/{v2} and wait until the ingress gateway holds it"):
        backend.apply(ROUTE, dataclasses.replace(backend.options, split={"v1": v1, "v2": v2}))
        wanted = {subset: weight for subset, weight in (("v1", v1), ("v2", v2)) if weight}
        wait_for(backend, lambda: tcp_targets(backend.config_dump(GATEWAY)) == wanted, f"the {v1}/{v2} tcp route")
    n = sample_size(v1)
    start = versions(backend.istio_metrics(GATEWAY))
    with console.step(f"{n} TCP connections through port 31400, one request each"):
        answers = answered_by(backend.tcp_connections(SERVICE, n))
    # The gateway logs a connection when it closes: wait until all are in (a short count fails the check).
    backend.poll(lambda: sum(versions(backend.istio_metrics(GATEWAY)).values()) - sum(start.values()) >= n, 10)
    after = versions(backend.istio_metrics(GATEWAY))
    counts = {version: after.get(version, 0) - start.get(version, 0) for version in ("v1", "v2")}
    counts["failed"] = max(0, n - counts["v1"] - counts["v2"])
    if not counts["failed"]:
        del counts["failed"]
    return counts, answers


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "tcp-traffic-shifting",
        backend.name,
        backend.pair.name,
        "A Gateway server on port 31400 with protocol TCP and a VirtualService tcp route send connections to "
        "minimal-tcp's subsets by weight: all to v1, then 80/20. Each split is counted per destination_version by "
        "the ingress gateway's istio_tcp_connections_opened_total.",
    )
    report.design.append(
        f"Each split is judged by a chi-square goodness-of-fit test at alpha {ALPHA}, with a sample size that "
        f"detects a 10-point shift of the v1 share with power {POWER}; a 0% subset must get no connection in "
        "enough connections to rule out a 1% leak. The answering pods are shown beside as a cross-check."
    )
    with console.step("apply minimal-service-v2 and the minimal-tcp Service (a port Istio treats as TCP)"):
        backend.apply(V2)
        backend.apply(SERVICE_TEMPLATE)
    for v1, v2 in STEPS:
        counts, answers = split_step(backend, console, v1, v2)
        check = split_check(f"connections split {v1}/{v2}", counts, {"v1": v1, "v2": v2})
        report.add(with_detail(check, f"the answering pods: v1 {answers['v1']} / v2 {answers['v2']}"))
        report.phases.append(Phase(f"weights {v1}/{v2}", counts, {"v1": v1 / 100, "v2": v2 / 100}))
        report.requests += sum(counts.values())
    with console.step("remove the tcp route, its Gateway, the subsets and minimal-tcp (back to the baseline)"):
        backend.delete(ROUTE)
        backend.delete(SERVICE_TEMPLATE)
    return report
