"""traffic-shift: minimal-service v1/v2 behind one Service, split by weight, then a canary walk."""

from __future__ import annotations

import dataclasses
from collections import Counter

from meshy import stats
from meshy.console import Console
from meshy.metrics import istio
from meshy.metrics.prometheus import Sample
from meshy.scenarios.backends import Backend, route_targets, wait_for
from meshy.scenarios.checks import split_check, with_detail
from meshy.scenarios.traffic import Result, get_request
from meshy.scenarios.verdict import ALPHA, POWER, Phase, Report

SHIFT = 0.10  # the smallest wrong split each step must catch: ten percentage points
CANARY = ((90, 10), (50, 50), (0, 100))
SPLIT_FILE = "istio/minimal-virtualservice-split.yaml.j2"
GATEWAY, SERVICE = "istio-ingressgateway", "minimal-service"


def sample_size(v1: int) -> int:
    p = v1 / 100
    if p in (0.0, 1.0):
        return stats.zero_events_sample_size(0.01, ALPHA)
    wrong = p - SHIFT if p > 0.5 else p + SHIFT
    return stats.proportion_sample_size(p, wrong, ALPHA, POWER)


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "traffic-shift",
        backend.name,
        backend.pair.name,
        "minimal-service-v2 joins v1 behind the minimal-service Service (version dropped from its selector); "
        "a DestinationRule names the subsets and the VirtualService splits traffic by weight. Each step's "
        "requests per destination_version, as the ingress gateway reports them in Istio's istio_requests_total, "
        "must fit the weights.",
    )
    report.design.append(
        f"Each split is judged by a chi-square goodness-of-fit test at alpha {ALPHA}; its sample size detects a "
        f"{SHIFT:.0%} shift of the v1 share with power {POWER}. A 0% subset must get no request in enough calls "
        "to rule out a 1% leak."
    )
    with console.step("deploy minimal-service-v2, drop version from the Service selector, apply the DestinationRule"):
        backend.apply("services/minimal-service-v2.yaml.j2")
        backend.remove_selector_label("minimal-service", "version")
        backend.apply("istio/minimal-destinationrule.yaml.j2")
    steps = [(50, 50), *CANARY]
    for index, (v1, v2) in enumerate(steps):
        label = f"{v1}/{v2}" + (" (canary step)" if index else "")
        counts, answers = split_step(backend, console, v1, v2, label)
        check = split_check(f"split {label}", counts, {"v1": v1, "v2": v2})
        report.add(with_detail(check, f"the answers' servedBy: v1 {answers['v1']} / v2 {answers['v2']}"))
        report.phases.append(Phase(f"weights {v1}/{v2}", counts, {"v1": v1 / 100, "v2": v2 / 100}))
        report.requests += sum(counts.values())
    with console.step("restore the baseline: minimal-virtualservice, Service selecting v1, no DestinationRule"):
        backend.apply("istio/minimal-virtualservice.yaml.j2")
        backend.apply("services/minimal-service.yaml.j2")
        backend.delete("istio/minimal-destinationrule.yaml.j2")
    return report


def split_step(
    backend: Backend, console: Console, v1: int, v2: int, label: str
) -> tuple[dict[str, int], dict[str, int]]:
    """The split as Istio's metrics counted it, and as the answers' servedBy says (a cross-check)."""
    with console.step(f"apply weights {v1}/{v2} and wait until the ingress gateway routes by them"):
        backend.apply(SPLIT_FILE, dataclasses.replace(backend.options, split={"v1": v1, "v2": v2}))
        wanted = {"v1": v1, "v2": v2}

        def active() -> bool:
            targets = route_targets(backend.config_dump("istio-ingressgateway"), "minimal.svc.kind.org")
            by_subset = {name.split("|")[2]: weight for name, weight in targets.items() if weight}
            return by_subset == {subset: weight for subset, weight in wanted.items() if weight}

        wait_for(backend, active, f"the {v1}/{v2} split")
    n = sample_size(v1)
    start = backend.istio_metrics(GATEWAY)
    with console.step(f"split {label}: {n} requests"):
        results = backend.send(
            get_request(backend.ingress, "minimal.svc.kind.org"), n, lambda d, t: console.progress(label, d, t)
        )
    counts = split_counts(start, backend.istio_metrics(GATEWAY), n)
    return counts, served_by(results)


def versions(samples: list[Sample]) -> Counter:
    """(destination_version, response_code) -> requests the ingress gateway sent to minimal-service.

    The gateway learns the answering pod's version from its HTTP metadata exchange (the GATEWAY context's
    istio.metadata_exchange filter in istio/istio manifests/charts/istio-control/istio-discovery/templates/
    telemetryv2_1.8.yaml at 1.8.6; built in from then on), as Kiali's versioned graph relies on."""
    return istio.requests_by(
        samples, SERVICE, ("destination_version", "response_code"), reporter="source", source_workload=GATEWAY
    )


def split_counts(before: list[Sample], after: list[Sample], sent: int) -> dict[str, int]:
    """Answered requests per version between two reads; anything else (another code, no version, a request
    the gateway did not report) is 'failed'."""
    counts = {"v1": 0, "v2": 0, "failed": 0}
    for (version, code), n in istio.increase(versions(before), versions(after)).items():
        counts[version if code == "200" and version in ("v1", "v2") else "failed"] += n
    counts["failed"] += max(0, sent - sum(counts.values()))
    if not counts["failed"]:
        del counts["failed"]
    return counts


def version_of(pod: str) -> str | None:
    """minimal-service's version from the name of the pod that answered (its servedBy)."""
    if pod.startswith("minimal-service-v2-"):
        return "v2"
    return "v1" if pod.startswith("minimal-service-") else None


def served_by(results: list[Result]) -> dict[str, int]:
    """The split as the answers' servedBy names it (minimal-service's pod name): the cross-check."""
    counts = {"v1": 0, "v2": 0}
    for result in results:
        version = version_of(result.json().get("servedBy", "") if result.status == 200 else "")
        if version:
            counts[version] += 1
    return counts
