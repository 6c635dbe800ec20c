"""retries: POST /bounce through minimal-service to bounced-service, before and after retries."""

from __future__ import annotations

import json

from meshy import stats
from meshy.console import Console
from meshy.scenarios.backends import Backend, app_requests, wait_for
from meshy.scenarios.checks import exact_check, mean_band, mean_check, share_check
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
        "sidecar sends about 3.3 requests upstream per call.",
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
    report.add(share_check("before: share of '200 OK'", before[0], n_before, ok_before, "30% succeed, none retried"))
    report.add(
        exact_check(
            "before: upstream requests (one per call)", before[1], n_before, "Istio's default retries skip 500s"
        )
    )
    report.phases.append(
        Phase(
            "before retries", {"200 OK": before[0], "500": n_before - before[0]}, {"200 OK": ok_before, "500": FAILURE}
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
    report.add(share_check("after: share of '200 OK'", after[0], n_after, ok_after, "1 - 0.7^21"))
    report.add(
        mean_check("after: upstream requests per call", after[1], n_after, mean, variance, "truncated geometric")
    )
    report.phases.append(
        Phase(
            "after retries", {"200 OK": after[0], "500": n_after - after[0]}, {"200 OK": ok_after, "500": 1 - ok_after}
        )
    )

    report.phases.append(
        Phase(
            "upstream requests per call",
            {"before": before[1], "after": after[1]},
            means={
                "before": (before[1] / n_before, 1.0, 1.0),
                "after": (after[1] / n_after, *mean_band(n_after, mean, variance)),
            },
        )
    )

    with console.step("remove bounced-virtualservice-retries (back to the baseline)"):
        backend.delete(RETRIES_FILE)
    report.requests = n_before + n_after
    return report


def measure(backend: Backend, console: Console, request, n: int, label: str, workers: int = WORKERS) -> tuple[int, int]:
    """Successful calls, and the requests bounced-service's app counted for them (every attempt reaches it)."""
    start = app_requests(backend.app_metrics("bounced-service"), "/")
    with console.step(f"{label}: {n} calls"):
        results = backend.send(request, n, lambda d, t: console.progress(label, d, t), workers)
    end = app_requests(backend.app_metrics("bounced-service"), "/")
    ok = sum(1 for r in results if r.status == 200 and r.json().get("body") == "200 OK")
    return ok, end - start
