"""circuit-breaking: a DestinationRule's connection pool sheds what it cannot hold with 503 and `UO`.

minimal-service calls slow-service (each answer takes up to a second) from
many callers at once. With one connection and one pending request allowed,
the caller's sidecar holds two calls and answers the others at once with 503,
response flag UO (upstream overflow), which Istio reports in the
response_flags label of istio_requests_total. Istio's translation:
applyConnectionPool in pilot/pkg/networking/core/v1alpha3/cluster.go at 1.8.6
and in pilot/pkg/networking/core/cluster_traffic_policy.go at 1.28.10 and
1.30.3. The task's other half, outlier detection, is the outlier-detection
scenario.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from meshy import stats
from meshy.console import Console
from meshy.metrics import istio, prometheus
from meshy.scenarios import targets
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.checks import exact_check
from meshy.scenarios.request_timeouts import ENDPOINT, SERVICE_FILE
from meshy.scenarios.targets import answered, upstream
from meshy.scenarios.traffic import Request, Result, bounce_request
from meshy.scenarios.verdict import ALPHA, POWER, Check, Phase, Report

RULE_FILE = "istio/slow-destinationrule-circuit-breaker.yaml.j2"
CALLER, TARGET = "minimal-service", "slow-service"
# Callers at once: the pool holds two (one connection, one pending), so at least 10 of 12 are shed at a time.
CALLERS = 12
# With the limits, a shed share whose interval lies above this passes; without shedding the share is 0.
FLOOR = 0.5
# The share of callers the pool cannot hold at any moment: what the sample size is designed for.
HELD_OFF = (CALLERS - 2) / CALLERS
# So many calls without limits, none shed, rule out a shed share of 50% or more.
FREE_RATE = 0.5


@dataclass(frozen=True)
class Observed:
    calls: int
    answered: int
    shed: int  # 503 at the caller
    overflow: int  # istio_requests_total with response_flags UO, reported by the caller's sidecar


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "circuit-breaking",
        backend.name,
        backend.pair.name,
        f"{CALLERS} callers at once call slow-service through minimal-service's sidecar. Without limits every "
        "call waits its turn and succeeds; with slow-destinationrule-circuit-breaker (maxConnections 1, "
        "http1MaxPendingRequests 1, maxRequestsPerConnection 1) the sidecar sheds what it cannot hold: 503 with "
        "the UO flag, counted in Istio's istio_requests_total.",
    )
    n_free = stats.zero_events_sample_size(FREE_RATE, ALPHA)
    n_limited = stats.proportion_sample_size(HELD_OFF, FLOOR, ALPHA, POWER)
    report.design += [
        f"without limits: {max(n_free, CALLERS)} calls, {CALLERS} at a time; none shed rules out a shed share of "
        f"{FREE_RATE:.0%} or more at alpha {ALPHA}.",
        f"with limits: {n_limited} calls, {CALLERS} at a time; the shed share passes when its {100 * (1 - ALPHA):.1f}% "
        f"Wilson interval lies above {FLOOR:.0%}; so many calls tell {HELD_OFF:.2f} (2 of {CALLERS} callers held) from "
        f"{FLOOR:.0%} with power {POWER}. Every shed call must be "
        "counted with response_flags UO by the caller's sidecar, exactly.",
    ]
    request = bounce_request(backend.ingress, ENDPOINT)
    targets.deploy(backend, console, SERVICE_FILE, RULE_FILE, request)
    free = measure(backend, console, request, max(n_free, CALLERS), "without limits")
    for check in judge_free(free):
        report.add(check)
    report.phases.append(Phase("without limits", {"200 OK": free.answered, "503 UO": free.shed}))

    with console.step("apply slow-destinationrule-circuit-breaker and wait until the caller's sidecar has it"):
        backend.apply(RULE_FILE)
        wait_for(backend, lambda: limits_seen(backend.config_dump(CALLER)), "the connection pool limits")
    limited = measure(backend, console, request, n_limited, "with limits")
    for check in judge_limited(limited):
        report.add(check)
    report.phases.append(Phase("with limits", {"200 OK": limited.answered, "503 UO": limited.shed}))

    targets.remove(backend, console, SERVICE_FILE, RULE_FILE)
    report.requests = free.calls + limited.calls
    return report


def limits_seen(config_dump: dict) -> bool:
    """Whether the caller's clusters carry the pool's limits (Envoy's circuit_breakers thresholds)."""
    return '"max_pending_requests": 1' in json.dumps(config_dump)


def overflows(metrics: str) -> int:
    """Calls the caller's sidecar shed towards the target: response_flags UO, as the source reports them."""
    samples = prometheus.parse(metrics)
    return sum(
        int(s.value)
        for s in samples
        if s.matches(istio.REQUESTS, {"reporter": "source", "source_workload": CALLER, "response_flags": "UO"})
        and s.labels.get("destination_service_name") == TARGET
    )


def is_shed(result: Result) -> bool:
    return upstream(result).startswith("503")


def measure(backend: Backend, console: Console, request: Request, n: int, label: str) -> Observed:
    start = overflows(backend.proxy_metrics(CALLER))
    with console.step(f"{label}: {n} calls, {CALLERS} at a time"):
        results = backend.send(request, n, lambda d, t: console.progress(label, d, t), CALLERS)
    overflow = overflows(backend.proxy_metrics(CALLER)) - start
    return Observed(n, sum(map(answered, results)), sum(map(is_shed, results)), overflow)


def judge_free(seen: Observed) -> list[Check]:
    return [
        exact_check("without limits: calls answered '200 OK'", seen.answered, seen.calls, "every call"),
        exact_check("without limits: calls counted with the UO flag", seen.overflow, 0, "none"),
    ]


def judge_limited(seen: Observed) -> list[Check]:
    interval = stats.wilson(seen.shed, seen.calls, ALPHA)
    return [
        Check(
            "with limits: share of calls shed with 503",
            f"{seen.shed / seen.calls:.4f} ({seen.shed}/{seen.calls})" if seen.calls else "no calls",
            f"above {FLOOR:.0%} (2 of {CALLERS} callers held at a time)",
            f"{100 * (1 - ALPHA):.1f}% Wilson interval {interval}",
            passed=seen.calls > 0 and interval.low > FLOOR,
        ),
        exact_check("with limits: shed calls counted with the UO flag", seen.overflow, seen.shed, "one per 503"),
        exact_check("with limits: calls neither answered nor shed", seen.calls - seen.answered - seen.shed, 0, "none"),
    ]
