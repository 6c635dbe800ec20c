"""request-timeouts: a route timeout cuts slow calls to slow-service at the timeout with 504; none without one.

slow-service waits a random time, uniform in [0, DELAY_MAX], before it answers
(minimal_service/app.py; the sample service's DELAY_MAX). minimal-service calls
it through its sidecar (POST /bounce), so the caller's sidecar applies the
VirtualService's route timeout; the bounce answer carries the status line the
sidecar returned ("504 Gateway Timeout" for a cut call).
"""

from __future__ import annotations

import json
import statistics

from meshy import stats
from meshy.console import Console
from meshy.scenarios import targets
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.checks import exact_check, share_check
from meshy.scenarios.manifests import container_env, first_http_route, seconds
from meshy.scenarios.targets import answered, upstream
from meshy.scenarios.traffic import Result, bounce_request
from meshy.scenarios.verdict import ALPHA, POWER, Check, Phase, Report

SERVICE_FILE = "services/slow-service.yaml.j2"
TIMEOUT_FILE = "istio/slow-virtualservice-timeout.yaml.j2"
ENDPOINT = "http://slow-service:9090"
# A cut share this far below the expected one (a timeout at about twice its value) must fail.
SHIFT = 0.10
# Without a timeout, no call may be cut; so few calls rule out a cut share of a half or more.
UNCUT_RATE = 0.5
# Calls mostly wait on slow-service, so many run at once.
WORKERS = 32
# Envoy's timer may end a few milliseconds early by the client's clock.
CLOCK_SLACK = 0.005


def run(backend: Backend, console: Console) -> Report:
    timeout = seconds(first_http_route(backend, TIMEOUT_FILE)["timeout"])
    delay_max = float(container_env(backend, SERVICE_FILE, "DELAY_MAX"))
    cut = 1 - timeout / delay_max
    report = Report(
        "request-timeouts",
        backend.name,
        backend.pair.name,
        f"slow-service answers after a random wait of up to {delay_max:g} s. Without a route timeout (Istio's "
        f"default is none) every call from minimal-service waits for it; with slow-virtualservice-timeout "
        f"(timeout {timeout:g} s) the caller's sidecar cuts each slower call at {timeout:g} s with 504, about "
        f"{cut:.0%} of them.",
    )
    n_before = stats.zero_events_sample_size(UNCUT_RATE, ALPHA)
    n_after = stats.proportion_sample_size(cut, cut - SHIFT, ALPHA, POWER)
    report.design += [
        f"before: {n_before} calls; if none is cut, a cut share of {UNCUT_RATE:.0%} or more is ruled out at "
        f"alpha {ALPHA}.",
        f"after: {n_after} calls tell a cut share of 1 - {timeout:g}/{delay_max:g} = {cut:.2f} from {cut - SHIFT:.2f} "
        f"(a timeout about twice as long; alpha {ALPHA}, power {POWER}).",
    ]
    request = bounce_request(backend.ingress, ENDPOINT)
    targets.deploy(backend, console, SERVICE_FILE, TIMEOUT_FILE, request)

    with console.step(f"before: {n_before} calls to slow-service, no route timeout"):
        before = backend.send(request, n_before, workers=WORKERS)
    for check in judge_before(before, timeout, delay_max):
        report.add(check)
    report.phases.append(Phase("no timeout", tally(before)))

    with console.step("apply slow-virtualservice-timeout and wait until the caller's sidecar has it"):
        backend.apply(TIMEOUT_FILE)
        wait_for(backend, lambda: route_timeout_seen(backend.config_dump("minimal-service"), timeout), "the timeout")
    with console.step(f"after: {n_after} calls to slow-service, timeout {timeout:g} s"):
        after = backend.send(request, n_after, lambda d, t: console.progress("calls", d, t), WORKERS)
    for check in judge_after(after, timeout, delay_max):
        report.add(check)
    report.phases.append(Phase(f"timeout {timeout:g} s", tally(after), {"504": cut, "200 OK": 1 - cut}))

    targets.remove(backend, console, SERVICE_FILE, TIMEOUT_FILE)
    report.requests = n_before + n_after
    return report


def is_cut(result: Result) -> bool:
    # A timeout that fires after slow-service's headers have passed resets the stream instead of a 504
    # (Envoy's router); minimal-service reports that as 502 with this reason (minimal_service/bounce.py).
    broken_off = result.status == 502 and "answer broke off" in result.body
    return upstream(result).startswith("504") or broken_off


def tally(results: list[Result]) -> dict[str, int]:
    cut = sum(map(is_cut, results))
    ok = sum(map(answered, results))
    return {"200 OK": ok, "504": cut, "other": len(results) - ok - cut}


def judge_before(results: list[Result], timeout: float, delay_max: float) -> list[Check]:
    n = len(results)
    slow = sum(1 for r in results if answered(r) and r.seconds > timeout)
    return [
        exact_check("before: calls answered '200 OK' (nothing cut)", tally(results)["200 OK"], n, "every call"),
        share_check(
            f"before: share of answered calls slower than {timeout:g} s",
            slow,
            n,
            1 - timeout / delay_max,
            f"1 - {timeout:g}/{delay_max:g}: slow-service is slow and nothing cuts it",
        ),
    ]


def judge_after(results: list[Result], timeout: float, delay_max: float) -> list[Check]:
    n = len(results)
    counts = tally(results)
    cut_times = [r.seconds for r in results if is_cut(r)]
    early = sum(1 for t in cut_times if t < timeout - CLOCK_SLACK)
    median = statistics.median(cut_times) if cut_times else float("nan")
    # Cut calls end at the timeout; were the timeout not applied they would last (timeout + delay_max) / 2.
    late = (timeout + delay_max) / 2
    return [
        # One-sided: the hops before slow-service's wait add to it, so slightly more calls than 1 - T/D
        # outlast the timeout, the more the busier the machine; a timeout cut too early is caught below.
        share_check(
            "after: share of calls cut with 504",
            counts["504"],
            n,
            1 - timeout / delay_max,
            "calls slower than it",
            at_least=True,
        ),
        exact_check("after: calls neither answered nor cut", counts["other"], 0, "none"),
        exact_check(f"after: cut calls that ended before {timeout:g} s", early, 0, "none: the timeout is not shorter"),
        Check(
            "after: median duration of a cut call",
            f"{median:.3f} s ({len(cut_times)} calls)",
            f"{timeout:g} s (the timeout)",
            f"passes in [{timeout:g}, {late:.3f}) s: a call left uncut would last {late:.3f} s on average",
            passed=bool(cut_times) and timeout - CLOCK_SLACK <= median < late,
        ),
    ]


def route_timeout_seen(config_dump: dict, timeout: float) -> bool:
    """Whether a route of the dump carries the timeout (protobuf's JSON writes 0.1 s as "0.100s")."""
    return f'"timeout": "{timeout:.3f}s"' in json.dumps(config_dump)
