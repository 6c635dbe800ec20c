"""outlier-detection: a DestinationRule's outlier detection ejects the pod that keeps failing.

flaky-service has two pods, one of which answers 500 to everything.
minimal-service calls it (POST /bounce). Without outlier detection about half
the calls fail; with consecutive5xxErrors 3 the caller's sidecar ejects that
pod after its third 500 in a row, and every later call reaches the healthy
one: Istio sets Envoy's panic threshold to minHealthPercent (0 unless set), so
ejecting half the pods is allowed. Istio's translation: applyOutlierDetection
in pilot/pkg/networking/core/v1alpha3/cluster.go at 1.8.6 and in
pilot/pkg/networking/core/cluster_traffic_policy.go at 1.28.10 and 1.30.3.
This is the second half of istio.io's Circuit Breaking task.
"""

from __future__ import annotations

import json

from meshy import stats
from meshy.console import Console
from meshy.scenarios import targets
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.checks import exact_check, share_check
from meshy.scenarios.manifests import objects
from meshy.scenarios.targets import upstream
from meshy.scenarios.traffic import Result, bounce_request
from meshy.scenarios.verdict import ALPHA, POWER, Check, Phase, Report

FLAKY_FILE = "services/flaky-service.yaml.j2"
OUTLIER_FILE = "istio/flaky-destinationrule-outlier.yaml.j2"
ENDPOINT = "http://flaky-service:9090"
CALLER = "minimal-service"
# Without outlier detection half the calls reach the failing pod; a share this far off must fail.
SHIFT = 0.15
HALF = {"500": 0.5, "200 OK": 0.5}
SLIP = 1  # calls right after the ejection that may still reach the pod (see judge_ejection)
# With it, so many calls after the ejection, none failing, rule out a failure rate of 5% or more.
EJECTED_RATE = 0.05


def run(backend: Backend, console: Console) -> Report:
    rule = next(doc for doc in objects(backend, OUTLIER_FILE) if doc["kind"] == "DestinationRule")
    errors = rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"]
    report = Report(
        "outlier-detection",
        backend.name,
        backend.pair.name,
        "flaky-service has a healthy pod and one answering 500 to every request. Without outlier detection "
        f"about half of minimal-service's calls fail; with flaky-destinationrule-outlier (consecutive5xxErrors "
        f"{errors}) the caller's sidecar ejects the failing pod after {errors} 500s in a row and every later "
        "call succeeds.",
    )
    n_mixed = stats.proportion_sample_size(0.5, 0.5 - SHIFT, ALPHA, POWER)
    n_ejected = stats.zero_events_sample_size(EJECTED_RATE, ALPHA) + errors
    report.design += [
        f"without outlier detection: {n_mixed} calls tell a failing share of 0.5 from {0.5 - SHIFT:.2f} "
        f"(alpha {ALPHA}, power {POWER}).",
        f"with outlier detection: {n_ejected} calls one at a time; {errors} fail (the consecutive 5xx that eject "
        f"the pod), and none of the about {n_ejected - errors} after them rules out a failure rate of "
        f"{EJECTED_RATE:.0%} or more at alpha {ALPHA}.",
    ]
    request = bounce_request(backend.ingress, ENDPOINT)
    targets.deploy(backend, console, FLAKY_FILE, OUTLIER_FILE, request)
    with console.step(f"without outlier detection: {n_mixed} calls to flaky-service"):
        mixed = [failed(r) for r in backend.send(request, n_mixed)]
    report.add(
        share_check("without outlier detection: share of calls failing", sum(mixed), n_mixed, 0.5, "1 of 2 pods fails")
    )
    report.phases.append(Phase("no outlier detection", {"500": sum(mixed), "200 OK": n_mixed - sum(mixed)}, HALF))

    with console.step("apply flaky-destinationrule-outlier and wait until the caller's sidecar has it"):
        backend.apply(OUTLIER_FILE)
        wait_for(backend, lambda: outlier_seen(backend.config_dump(CALLER), errors), "the outlier detection")
    with console.step(f"with outlier detection: {n_ejected} calls to flaky-service, one at a time"):
        # One at a time, so that the failures before the ejection are the consecutive ones it needs.
        ejected = [failed(r) for r in backend.send(request, n_ejected, workers=1)]
    for check in judge_ejection(ejected, errors):
        report.add(check)
    report.phases.append(Phase("outlier detection", {"500": sum(ejected), "200 OK": n_ejected - sum(ejected)}))

    targets.remove(backend, console, FLAKY_FILE, OUTLIER_FILE)
    report.requests = n_mixed + n_ejected
    return report


def failed(result: Result) -> bool:
    return upstream(result).startswith("500")


def outlier_seen(config_dump: dict, errors: int) -> bool:
    """Whether the caller's clusters eject after `errors` consecutive 5xx (Envoy's outlier_detection)."""
    return f'"consecutive_5xx": {errors}' in json.dumps(config_dump)


def judge_ejection(failures: list[bool], errors: int) -> list[Check]:
    """Calls in order, True for a 500: the first `errors` failures eject the pod, none may follow.

    Envoy ejects on its main thread and then updates the workers' host sets, so the one call right after
    the ejecting 500 may still reach the pod; that call is let through, not the next.
    """
    ejected_at = [i for i, failure in enumerate(failures) if failure][errors - 1 : errors]
    after = failures[ejected_at[0] + 1 + SLIP :] if ejected_at else []
    total = sum(failures)
    return [
        Check(
            "with outlier detection: calls failing",
            str(total),
            f"{errors} (the consecutive 5xx that eject the pod)",
            f"passes at {errors}, or {errors + SLIP} when the call right after the ejection still reached the pod",
            passed=errors <= total <= errors + SLIP and not any(after),
        ),
        exact_check("with outlier detection: calls failing after the ejection", sum(after), 0, f"none of {len(after)}"),
    ]
