"""gateway: the ingress gateway routes by Host to minimal-service; unknown hosts get 404."""

from __future__ import annotations

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend
from meshy.scenarios.checks import all_check, exact_check
from meshy.scenarios.traffic import get_request
from meshy.scenarios.verdict import ALPHA, Phase, Report

MISS_RATE = 0.01
UNKNOWN_REQUESTS = 50


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "gateway",
        backend.name,
        backend.pair.name,
        "Requests with Host minimal.svc.kind.org enter through the ingress gateway and reach minimal-service; "
        "a host no VirtualService names gets 404 from the gateway.",
    )
    n = stats.zero_events_sample_size(MISS_RATE, ALPHA)
    report.design.append(
        f"{n} requests: if none is lost, a loss rate of {MISS_RATE:.0%} or more is ruled out at alpha {ALPHA}."
    )
    with console.step(f"{n} requests for minimal.svc.kind.org through {backend.ingress}"):
        results = backend.send(
            get_request(backend.ingress, "minimal.svc.kind.org"), n, lambda d, t: console.progress("requests", d, t)
        )
    reached = sum(1 for r in results if r.status == 200 and r.json().get("servedBy", "").startswith("minimal-service"))
    report.add(
        all_check(
            "minimal.svc.kind.org reaches minimal-service (200, JSON with servedBy)", reached, n, "reach it", MISS_RATE
        )
    )
    report.phases.append(Phase("minimal.svc.kind.org", {"200 from minimal-service": reached, "other": n - reached}))

    with console.step(f"{UNKNOWN_REQUESTS} requests for an unknown host"):
        unknown = backend.send(get_request(backend.ingress, "unknown.svc.kind.org"), UNKNOWN_REQUESTS)
    not_found = sum(1 for r in unknown if r.status == 404)
    report.add(
        exact_check("unknown.svc.kind.org gets 404 (no virtual host matches)", not_found, UNKNOWN_REQUESTS, "every one")
    )
    report.phases.append(Phase("unknown.svc.kind.org", {"404": not_found, "other": UNKNOWN_REQUESTS - not_found}))

    if backend.name == "kind":
        with console.step("kiali.istio.kind.org through the istio-system gateway"):
            kiali = backend.send(get_request(backend.ingress, "kiali.istio.kind.org"), 1)[0]
        redirected = int(kiali.status == 302)
        report.add(exact_check("kiali.istio.kind.org answers 302 to /kiali/", redirected, 1, "a redirect"))
    report.requests = n + UNKNOWN_REQUESTS
    return report
