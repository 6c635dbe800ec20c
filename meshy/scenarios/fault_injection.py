"""fault-injection: the ingress gateway delays and aborts a share of requests for minimal.svc.kind.org.

Without `percentage`, a fault injects into no request, in every release of the
matrix: Istio's translation (pilot/pkg/networking/core/v1alpha3/route/route.go
translateFault at 1.8.6, pilot/pkg/networking/core/route/route.go TranslateFault
at 1.28.10 and 1.30.3) gives the delay the deprecated integer `percent` (0 when
absent) and leaves the abort's percentage unset, which Envoy reads as a zero
FractionalPercent (source/extensions/filters/common/fault/fault_config.cc,
FaultAbortConfig takes abort.percentage() as it is).
"""

from __future__ import annotations

import statistics
from typing import Any

from meshy import stats
from meshy.console import Console
from meshy.metrics import istio, prometheus
from meshy.scenarios.backends import Backend, first_route, wait_for
from meshy.scenarios.checks import exact_check, share_check
from meshy.scenarios.manifests import first_http_route, seconds
from meshy.scenarios.traffic import Result, get_request
from meshy.scenarios.verdict import ALPHA, POWER, Check, Phase, Report

HOST = "minimal.svc.kind.org"
GATEWAY, TARGET = "istio-ingressgateway", "minimal-service"
FAULT_FILE = "istio/minimal-virtualservice-fault.yaml.j2"
UNSET_FILE = "istio/minimal-virtualservice-fault-unset.yaml.j2"
BASELINE_FILE = "istio/minimal-virtualservice.yaml.j2"
FAULT_FILTER = "envoy.filters.http.fault"
# A share of delayed or aborted requests this far from the manifest's must fail.
SHIFT = 0.15
# Without percentage: so many requests with no fault rule out a fault rate of 5% or more.
LEAK_RATE = 0.05
# Delayed requests mostly wait, so many run at once.
WORKERS = 48
# Envoy's timer may end a few milliseconds early by the client's clock.
CLOCK_SLACK = 0.005
DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def run(backend: Backend, console: Console) -> Report:
    fault = first_http_route(backend, FAULT_FILE)["fault"]
    delay = seconds(fault["delay"]["fixedDelay"])
    delay_share = fault["delay"]["percentage"]["value"] / 100
    abort_status = fault["abort"]["httpStatus"]
    abort_share = fault["abort"]["percentage"]["value"] / 100
    report = Report(
        "fault-injection",
        backend.name,
        backend.pair.name,
        f"minimal-virtualservice with a fault: the ingress gateway delays {delay_share:.0%} of requests by "
        f"{delay:g} s and answers {abort_share:.0%} with {abort_status}, each drawn on its own. The same faults "
        "without `percentage` inject into no request (Istio's translation leaves a 0% share).",
    )
    n = max(
        stats.proportion_sample_size(delay_share, delay_share + SHIFT, ALPHA, POWER),
        stats.proportion_sample_size(abort_share, abort_share + SHIFT, ALPHA, POWER),
    )
    n_unset = stats.zero_events_sample_size(LEAK_RATE, ALPHA)
    report.design += [
        f"with percentage: {n} requests tell each share from one {SHIFT:.0%} off (two-sided, alpha {ALPHA}, "
        f"power {POWER}); a request counts as delayed when it took at least {delay:g} s by the client's clock, "
        "and the gateway's own reports (istio_requests_total, response_flags DI and FI) are judged as well.",
        f"without percentage: {n_unset} requests; if the gateway reports none delayed or aborted, a fault rate of "
        f"{LEAK_RATE:.0%} or more is ruled out at alpha {ALPHA}.",
    ]
    request = get_request(backend.ingress, HOST)
    expected = {"delay": delay_share, "abort": abort_share}

    apply_and_wait(backend, console, FAULT_FILE, expected)
    with console.step(f"with percentage: {n} requests"):
        start = injected(backend.proxy_metrics(GATEWAY))
        results = backend.send(request, n, lambda d, t: console.progress("requests", d, t), WORKERS)
        flagged = since(start, injected(backend.proxy_metrics(GATEWAY)))
    for check in judge_faults(results, delay, delay_share, abort_status, abort_share):
        report.add(check)
    for check in judge_flags(flagged, n, delay_share, sum(is_aborted(r, abort_status) for r in results)):
        report.add(check)
    report.phases.append(
        Phase(
            "delay",
            tally(results, delay, abort_status, "delay"),
            {"delayed": delay_share, "not delayed": 1 - delay_share},
        )
    )
    report.phases.append(
        Phase(
            "abort", tally(results, delay, abort_status, "abort"), {"aborted": abort_share, "answered": 1 - abort_share}
        )
    )

    apply_and_wait(backend, console, UNSET_FILE, {"delay": 0.0, "abort": 0.0})
    with console.step(f"without percentage: {n_unset} requests"):
        start = injected(backend.proxy_metrics(GATEWAY))
        unset = backend.send(request, n_unset)
        flagged = since(start, injected(backend.proxy_metrics(GATEWAY)))
    for check in judge_unset(unset, flagged, abort_status):
        report.add(check)
    report.phases.append(Phase("no percentage", {"reported DI": flagged["DI"], "reported FI": flagged["FI"]}))

    with console.step("restore minimal-virtualservice (no fault)"):
        backend.apply(BASELINE_FILE)
        wait_for(backend, lambda: gateway_fault(backend) is None, "the route without a fault")
    report.requests = n + n_unset
    return report


def apply_and_wait(backend: Backend, console: Console, template: str, shares: dict[str, float]) -> None:
    name = template.removeprefix("istio/").removesuffix(".yaml.j2")
    with console.step(f"apply {name} and wait until the ingress gateway has its faults"):
        backend.apply(template)
        wait_for(backend, lambda: gateway_fault(backend) == shares, f"the faults of {name}")


def gateway_fault(backend: Backend) -> dict[str, float] | None:
    return fault_shares(first_route(backend.config_dump("istio-ingressgateway"), HOST))


def fault_shares(route: dict[str, Any]) -> dict[str, float] | None:
    """The delay and abort shares of a route's fault filter config (None: the route has none).

    An unset FractionalPercent is 0 of HUNDRED (envoy/type/v3/percent.proto); protobuf's JSON omits zeros.
    """
    fault = route.get("typed_per_filter_config", {}).get(FAULT_FILTER)
    if fault is None:
        return None

    def share(part: str) -> float:
        percentage = fault.get(part, {}).get("percentage", {})
        return int(percentage.get("numerator", 0)) / DENOMINATORS[percentage.get("denominator", "HUNDRED")]

    return {"delay": share("delay"), "abort": share("abort")}


def is_delayed(result: Result, delay: float) -> bool:
    return result.seconds >= delay - CLOCK_SLACK


def is_aborted(result: Result, status: int) -> bool:
    # Envoy's fault filter answers with this body (source/extensions/filters/http/fault/fault_filter.cc).
    return result.status == status and result.body == "fault filter abort"


def is_answered(result: Result) -> bool:
    return result.status == 200 and result.json().get("servedBy", "").startswith("minimal-service")


def tally(results: list[Result], delay: float, status: int, part: str) -> dict[str, int]:
    if part == "delay":
        delayed = sum(is_delayed(r, delay) for r in results)
        return {"delayed": delayed, "not delayed": len(results) - delayed}
    aborted = sum(is_aborted(r, status) for r in results)
    return {"aborted": aborted, "answered": len(results) - aborted}


def judge_faults(
    results: list[Result], delay: float, delay_share: float, status: int, abort_share: float
) -> list[Check]:
    n = len(results)
    delayed = [r.seconds for r in results if is_delayed(r, delay)]
    aborted = sum(is_aborted(r, status) for r in results)
    other = sum(1 for r in results if not (is_aborted(r, status) or is_answered(r)))
    median = statistics.median(delayed) if delayed else float("nan")
    return [
        share_check(f"share of requests taking >= {delay:g} s", len(delayed), n, delay_share, "the delay's percentage"),
        share_check(f"share of requests aborted with {status}", aborted, n, abort_share, "the abort's percentage"),
        exact_check("requests neither aborted nor answered by minimal-service", other, 0, "none"),
        Check(
            "median duration of a delayed request",
            f"{median:.3f} s ({len(delayed)} requests)",
            f"{delay:g} s (the fixed delay)",
            f"passes in [{delay:g}, {2 * delay:g}) s: the delay is its fixed value, not a multiple",
            passed=bool(delayed) and delay - CLOCK_SLACK <= median < 2 * delay,
        ),
    ]


def judge_flags(flagged: dict[str, int], n: int, delay_share: float, aborted: int) -> list[Check]:
    """The gateway's own reports: DI on the delayed share, FI on exactly the requests seen aborted."""
    return [
        share_check("requests the gateway reported DI (delay injected)", flagged["DI"], n, delay_share, "its share"),
        exact_check("requests the gateway reported FI (fault injected)", flagged["FI"], aborted, "one per abort"),
    ]


def judge_unset(results: list[Result], flagged: dict[str, int], status: int) -> list[Check]:
    # Judged by the gateway's reports, not the client's clock: a loaded machine stalls some requests for as
    # long as the delay.
    aborted = sum(is_aborted(r, status) for r in results)
    answered = sum(is_answered(r) for r in results)
    return [
        exact_check("without percentage: requests the gateway reported DI", flagged["DI"], 0, "none delayed"),
        exact_check("without percentage: requests the gateway reported FI", flagged["FI"], 0, "none aborted"),
        exact_check(f"without percentage: requests aborted with {status}", aborted, 0, "none aborted"),
        exact_check("without percentage: requests answered by minimal-service", answered, len(results), "every one"),
    ]


def injected(metrics: str) -> dict[str, int]:
    """Requests to minimal-service the ingress gateway reported with each fault flag (DI delay, FI abort;
    a request with both is reported as "DI,FI")."""
    counts = {"DI": 0, "FI": 0}
    for sample in prometheus.parse(metrics):
        if (
            sample.matches(istio.REQUESTS, {"reporter": "source", "source_workload": GATEWAY})
            and sample.labels.get("destination_service_name") == TARGET
        ):
            for flag in sample.labels.get("response_flags", "").split(","):
                if flag in counts:
                    counts[flag] += int(sample.value)
    return counts


def since(start: dict[str, int], end: dict[str, int]) -> dict[str, int]:
    return {flag: end[flag] - start[flag] for flag in end}
