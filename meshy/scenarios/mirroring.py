"""mirroring: the ingress gateway sends each request to minimal-service (v1) and a copy to minimal-service-v2.

The copy is fire-and-forget: the caller gets v1's answer only, and v2's app
counts every copy once (its own /metrics, read through its Service). Istio
translates `mirror` with `mirrorPercentage` into the route's
request_mirror_policies (pilot/pkg/networking/core/v1alpha3/route/route.go at
1.8.6, pilot/pkg/networking/core/route/route.go at 1.28.10 and 1.30.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend, app_requests, first_route, wait_for
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.traffic import Request, Result, get_request
from meshy.scenarios.verdict import ALPHA, Check, Phase, Report

HOST = "minimal.svc.kind.org"
V2_FILE = "services/minimal-service-v2.yaml.j2"  # part of the baseline; applied again in case it was removed
V2_SERVICE_FILE = "services/minimal-service-v2-service.yaml.j2"
MIRROR_FILE = "istio/minimal-virtualservice-mirror.yaml.j2"
BASELINE_FILE = "istio/minimal-virtualservice.yaml.j2"
V1, V2 = "minimal-service", "minimal-service-v2"
# So many requests answered by v1 alone rule out a leak of v2's answers of 1% or more.
LEAK_RATE = 0.01


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "mirroring",
        backend.name,
        backend.pair.name,
        "minimal-service-v2 (part of the baseline) gets a Service of its own. Without a mirror it gets no request; "
        "with minimal-virtualservice-mirror (mirror to minimal-service-v2, mirrorPercentage 100) the ingress "
        "gateway sends every request to v1 and a copy to v2: the caller sees v1 only, v2 counts each copy once.",
    )
    n = stats.zero_events_sample_size(LEAK_RATE, ALPHA)
    report.design.append(
        f"{n} requests per phase: if every one is answered by v1, a share of {LEAK_RATE:.0%} or more answered by "
        f"v2 is ruled out at alpha {ALPHA}. v2's requests are counted exactly: one per request with the mirror, "
        "none without."
    )
    request = get_request(backend.ingress, HOST)
    with console.step("deploy minimal-service-v2 and its own Service; no mirror yet"):
        backend.apply(BASELINE_FILE)
        backend.apply(V2_FILE)
        backend.apply(V2_SERVICE_FILE)
        wait_for(backend, lambda: not mirrored(backend), "the route without a mirror")
    before = measure(backend, console, request, n, "without a mirror", 0)
    for check in judge(before, n, mirror=False):
        report.add(check)
    report.phases.append(Phase("without a mirror", {"v1": before.v1_answers, "v2 requests": before.v2_requests}))

    with console.step("apply minimal-virtualservice-mirror and wait until the ingress gateway mirrors"):
        backend.apply(MIRROR_FILE)
        wait_for(backend, lambda: mirrored(backend), "the mirror")
    after = measure(backend, console, request, n, "with the mirror", n)
    for check in judge(after, n, mirror=True):
        report.add(check)
    report.phases.append(Phase("with the mirror", {"v1": after.v1_answers, "v2 requests": after.v2_requests}))

    with console.step("restore minimal-virtualservice and remove minimal-service-v2's own Service (the baseline)"):
        backend.apply(BASELINE_FILE)
        backend.delete(V2_SERVICE_FILE)
    report.requests = 2 * n
    return report


def mirrored(backend: Backend) -> bool:
    """Whether the ingress gateway's route for HOST mirrors (Envoy's request_mirror_policies)."""
    return bool(
        first_route(backend.config_dump("istio-ingressgateway"), HOST).get("route", {}).get("request_mirror_policies")
    )


@dataclass(frozen=True)
class Observed:
    """What one phase saw: answers by version at the caller, requests counted by each app."""

    v1_answers: int
    v2_answers: int
    v1_requests: int
    v2_requests: int

    @classmethod
    def of(cls, results: list[Result], v1_requests: int, v2_requests: int) -> Observed:
        versions = [served_by(r) for r in results]
        return cls(versions.count(V1), versions.count(V2), v1_requests, v2_requests)


def served_by(result: Result) -> str:
    """V1, V2 or '' from the answer's servedBy (pod names start with their Deployment's name)."""
    name = result.json().get("servedBy", "") if result.status == 200 else ""
    if name.startswith(V2 + "-"):
        return V2
    return V1 if name.startswith(V1 + "-") else ""


def measure(backend: Backend, console: Console, request: Request, n: int, label: str, copies: int) -> Observed:
    """n requests; `copies` is how many requests v2 should count, awaited before the final count."""
    v1_start = app_requests(backend.app_metrics(V1), "/")
    v2_start = app_requests(backend.app_metrics(V2), "/")
    with console.step(f"{label}: {n} requests"):
        results = backend.send(request, n, lambda d, t: console.progress(label, d, t))
    if copies:
        # Copies run beside the answers and may end a moment after the last one; a short count fails the check.
        backend.poll(lambda: app_requests(backend.app_metrics(V2), "/") - v2_start >= copies, 5)
    v1 = app_requests(backend.app_metrics(V1), "/") - v1_start
    v2 = app_requests(backend.app_metrics(V2), "/") - v2_start
    return Observed.of(results, v1, v2)


def judge(seen: Observed, n: int, mirror: bool) -> list[Check]:
    phase = "with the mirror" if mirror else "without a mirror"
    return [
        all_check(f"{phase}: answers from v1", seen.v1_answers, n, "answered by v1", LEAK_RATE),
        exact_check(f"{phase}: answers from v2", seen.v2_answers, 0, "none: the copy's answer is dropped"),
        exact_check(f"{phase}: requests v1's app served", seen.v1_requests, n, "one per request"),
        exact_check(
            f"{phase}: requests v2's app served",
            seen.v2_requests,
            n if mirror else 0,
            "exactly one copy per request" if mirror else "none",
        ),
    ]
