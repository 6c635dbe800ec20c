"""retries: POST /bounce through minimal-service to bounced-service, before and after retries."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from meshy import stats
from meshy.console import Console
from meshy.metrics import istio
from meshy.metrics.prometheus import Sample
from meshy.scenarios.backends import Backend, app_requests, wait_for
from meshy.scenarios.checks import exact_check, mean_band, mean_check, share_check, with_detail
from meshy.scenarios.traffic import WORKERS, bounce_request
from meshy.scenarios.verdict import ALPHA, POWER, Phase, Report

FAILURE = 0.70  # bounced-service answers 500 to 70% of requests
ATTEMPTS = 20  # bounced-virtualservice-retries: attempts
RETRIES_FILE = "istio/bounced-virtualservice-retries.yaml.j2"
ENDPOINT = "http://bounced-service:9090"
# Retried calls mostly wait out Envoy's retry back-off (25 ms base), so more run at once.
RETRY_WORKERS = 24


def run(backend: Backend, console: Console) -> Report:
    report = Report(
        "retries",
        backend.name,
        backend.pair.name,
        "bounced-service fails 70% of calls. Without a retry policy for 5xx, about 30% of bounces come back "
        "'200 OK'; with bounced-virtualservice-retries (20 attempts on 5xx) nearly all do, and the caller's "
        "sidecar sends about 3.3 requests upstream per call. Counted by Istio's istio_requests_total: calls and "
        "their final codes as minimal-service's sidecar reports them (reporter source), attempts as "
        "bounced-service's sidecar reports them (reporter destination).",
    )
    request = bounce_request(backend.ingress, ENDPOINT)
    ok_before = 1 - FAILURE
    ok_after = 1 - FAILURE ** (ATTEMPTS + 1)
    n_before = stats.proportion_sample_size(ok_before, ok_before + 0.10, ALPHA, POWER)
    n_after = stats.proportion_sample_size(ok_after, 0.95, ALPHA, POWER)
    report.design += [
        f"before: {n_before} calls detect a shift of the success share from 0.30 to 0.40 "
        f"(two-sided, alpha {ALPHA}, power {POWER}).",
        f"after: {n_after} calls tell 1 - 0.7^21 = {ok_after:.5f} from 0.95, i.e. from retries that barely work "
        f"(alpha {ALPHA}, power {POWER}).",
    ]
    backend.delete(RETRIES_FILE)  # a no-op when absent, as on a fresh baseline

    before = measure(backend, console, request, n_before, "before: no retry policy for 5xx")
    share = share_check("before: share of '200 OK'", before.ok, n_before, ok_before, "30% succeed, none retried")
    report.add(with_detail(share, before.answers()))
    report.add(
        with_detail(
            exact_check(
                "before: upstream attempts (one per call)",
                before.upstream,
                n_before,
                "Istio's default retries skip 500s",
            ),
            before.cross_check(),
        )
    )
    report.phases.append(
        Phase(
            "before retries", {"200 OK": before.ok, "500": n_before - before.ok}, {"200 OK": ok_before, "500": FAILURE}
        )
    )

    with console.step("apply bounced-virtualservice-retries and wait until the caller's sidecar has it"):
        backend.apply(RETRIES_FILE)
        wait_for(
            backend,
            lambda: f'"num_retries": {ATTEMPTS}' in json.dumps(backend.config_dump("minimal-service")),
            "the retry policy",
        )

    after = measure(backend, console, request, n_after, "after: 20 attempts on 5xx", RETRY_WORKERS)
    mean, variance = stats.truncated_geometric(FAILURE, ATTEMPTS + 1)
    report.add(
        with_detail(share_check("after: share of '200 OK'", after.ok, n_after, ok_after, "1 - 0.7^21"), after.answers())
    )
    report.add(
        with_detail(
            mean_check(
                "after: upstream attempts per call", after.upstream, n_after, mean, variance, "truncated geometric"
            ),
            after.cross_check(),
        )
    )
    report.phases.append(
        Phase(
            "after retries", {"200 OK": after.ok, "500": n_after - after.ok}, {"200 OK": ok_after, "500": 1 - ok_after}
        )
    )

    report.phases.append(
        Phase(
            "upstream attempts per call",
            {"before": before.upstream, "after": after.upstream},
            means={
                "before": (before.upstream / n_before, 1.0, 1.0),
                "after": (after.upstream / n_after, *mean_band(n_after, mean, variance)),
            },
        )
    )

    with console.step("remove bounced-virtualservice-retries (back to the baseline)"):
        backend.delete(RETRIES_FILE)
    report.requests = n_before + n_after
    return report


CALLER, SERVICE = "minimal-service", "bounced-service"


@dataclass(frozen=True)
class Tally:
    """One phase as Istio's metrics counted it, plus what the apps saw as cross-checks."""

    calls: Counter  # (response_code,) -> calls, reported by the caller's sidecar (reporter source)
    attempts: Counter  # (response_code,) -> attempts, reported by bounced-service's sidecar (destination)
    app_requests: int = 0  # bounced-service's own counter
    answered_ok: int = 0  # answers whose body was bounced-service's '200 OK'

    @property
    def ok(self) -> int:
        return self.calls[("200",)]

    @property
    def upstream(self) -> int:
        return sum(self.attempts.values())

    def cross_check(self) -> str:
        return f"bounced-service's own counter: {self.app_requests}"

    def answers(self) -> str:
        return f"the answers: {self.answered_ok} '200 OK'"


def reports(samples: list[Sample]) -> tuple[Counter, Counter]:
    """Calls by response code as the caller's sidecar reports them (one per call, the final answer), and
    attempts by response code as bounced-service's sidecar reports them (one per attempt)."""
    calls = istio.requests_by(samples, SERVICE, ("response_code",), reporter="source", source_workload=CALLER)
    attempts = istio.requests_by(samples, SERVICE, ("response_code",), reporter="destination", source_workload=CALLER)
    return calls, attempts


def tally(before: list[Sample], after: list[Sample], app_requests: int = 0, answered_ok: int = 0) -> Tally:
    (calls_0, attempts_0), (calls_1, attempts_1) = reports(before), reports(after)
    return Tally(istio.increase(calls_0, calls_1), istio.increase(attempts_0, attempts_1), app_requests, answered_ok)


def measure(backend: Backend, console: Console, request, n: int, label: str, workers: int = WORKERS) -> Tally:
    """The phase's calls and attempts from Istio's metrics of both sidecars (read before and after)."""
    start = backend.istio_metrics(CALLER, SERVICE)
    app_start = app_requests(backend.app_metrics(SERVICE), "/")
    with console.step(f"{label}: {n} calls"):
        results = backend.send(request, n, lambda d, t: console.progress(label, d, t), workers)
    app = app_requests(backend.app_metrics(SERVICE), "/") - app_start
    answered = sum(1 for r in results if r.status == 200 and r.json().get("body") == "200 OK")
    return tally(start, backend.istio_metrics(CALLER, SERVICE), app, answered)
