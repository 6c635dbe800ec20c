"""Verdict arithmetic: working numbers pass, numbers of a broken feature fail."""

from __future__ import annotations

import json

import pytest

from meshy import stats
from meshy.scenarios import circuit_breaking, fault_injection, mirroring, outlier_detection, request_timeouts
from meshy.scenarios.backends import route_targets
from meshy.scenarios.checks import all_check, exact_check, mean_check, share_check, split_check
from meshy.scenarios.traffic import Result
from meshy.scenarios.traffic_shift import sample_size
from meshy.scenarios.verdict import ALPHA, Check, Report

AFTER = 1 - 0.7**21


def test_retry_share_passes_when_working_and_fails_when_retries_are_missing():
    assert share_check("after", 231, 231, AFTER, "").passed
    # Two failures out of 231 are within chance for working retries (a Wilson interval rejected them).
    assert share_check("after", 229, 231, AFTER, "").passed
    assert not share_check("after", round(231 * 0.95), 231, AFTER, "retries that barely work").passed
    assert not share_check("after", 70, 231, AFTER, "no retries at all").passed
    # Istio's default policy (2 retries) does not retry 500s; even if it did, 1 - 0.7^3 is far off.
    assert not share_check("after", round(231 * (1 - 0.7**3)), 231, AFTER, "3 tries").passed


def test_before_share_catches_retries_already_on():
    n = stats.proportion_sample_size(0.3, 0.4, 0.001, 0.999)
    assert share_check("before", round(0.3 * n), n, 0.3, "").passed
    assert not share_check("before", round(0.4 * n), n, 0.3, "").passed


def test_mean_attempts_band():
    mean, variance = stats.truncated_geometric(0.7, 21)
    assert mean_check("attempts", round(mean * 231), 231, mean, variance, "").passed
    assert not mean_check("attempts", 231, 231, mean, variance, "one try each").passed


def test_split_checks():
    assert split_check("50/50", {"v1": 510, "v2": 489}, {"v1": 50, "v2": 50}).passed
    assert not split_check("50/50", {"v1": 600, "v2": 399}, {"v1": 50, "v2": 50}).passed
    assert not split_check("0/100", {"v1": 1, "v2": 687}, {"v1": 0, "v2": 100}).passed
    assert split_check("0/100", {"v1": 0, "v2": 688}, {"v1": 0, "v2": 100}).passed
    failed = split_check("50/50", {"v1": 500, "v2": 490, "failed": 9}, {"v1": 50, "v2": 50})
    assert not failed.passed and "9 requests failed" in failed.detail


def test_sample_sizes_follow_the_effect():
    assert sample_size(50) > sample_size(90) > 0
    assert sample_size(0) == sample_size(100) == stats.zero_events_sample_size(0.01, ALPHA)


def test_all_and_exact():
    assert all_check("x", 5, 5, "ok", 0.01).passed and not all_check("x", 4, 5, "ok", 0.01).passed
    assert exact_check("x", 3, 3, "").passed and not exact_check("x", 4, 3, "").passed


def test_report_needs_checks_to_pass():
    report = Report("s", "local", "p", "summary")
    assert not report.passed
    report.add(Check("a", "1", "1", "", True))
    assert report.passed and report.to_dict()["passed"] is True
    report.add(Check("b", "1", "2", "", False))
    assert not report.passed


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"cluster": "outbound|9090||a"}, {"outbound|9090||a": 100}),
        (
            {"weighted_clusters": {"clusters": [{"name": "x", "weight": 90}, {"name": "y", "weight": 10}]}},
            {"x": 90, "y": 10},
        ),
    ],
)
def test_route_targets_read_inline_and_rds_dumps(route, expected):
    dump = {
        "configs": [
            {
                "dynamic_route_configs": [
                    {
                        "route_config": {
                            "virtual_hosts": [
                                {
                                    "domains": ["minimal.svc.kind.org", "minimal.svc.kind.org:*"],
                                    "routes": [{"route": route}],
                                }
                            ]
                        }
                    }
                ]
            }
        ]
    }
    assert route_targets(dump, "minimal.svc.kind.org") == expected
    assert route_targets(dump, "other.example") == {}


def test_reports_are_written_as_json_markdown_and_png(tmp_path):
    import json

    from meshy.scenarios import report as writer
    from meshy.scenarios.verdict import Phase

    result = Report("traffic-shift", "local", "1.36-istio-1.30", "what it shows")
    result.add(Check("split 90/10", "v1 451 / v2 44", "v1 90% / v2 10%", "chi-square ...", True))
    result.add(Check("split 0/100", "v1 1 / v2 687", "v1 0% / v2 100%", "any request on a 0% subset fails", False))
    result.phases.append(Phase("weights 90/10", {"v1": 451, "v2": 44}, {"v1": 0.9, "v2": 0.1}))
    result.design.append("sizes from the effect")
    json_path, md_path, png_path = writer.write(result, tmp_path)
    assert json.loads(json_path.read_text())["passed"] is False
    text = md_path.read_text()
    assert text.startswith("# traffic-shift: FAILED")
    assert "| split 0/100 | v1 1 / v2 687 | v1 0% / v2 100% | any request on a 0% subset fails | **FAIL** |" in text
    assert "- sizes from the effect" in text
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the counts the verdicts are built from, read from Istio's metrics as the proxies report them ---

BOUNCED = "bounced-service.default.svc.cluster.local"
MINIMAL = "minimal-service.default.svc.cluster.local"


def requests_total(reporter: str, source: str, service: str, counts: dict[tuple[str, ...], int], **more: str) -> str:
    """istio_requests_total lines as a proxy serves them: one series per response code (and version)."""
    lines = []
    for key, value in counts.items():
        code, version = (*key, "v1")[:2]
        labels = {
            "reporter": reporter,
            "source_workload": source,
            "destination_workload": service.split(".")[0] + ("-v2" if version == "v2" else ""),
            "destination_version": version,
            "destination_service": service,
            "destination_service_name": service.split(".")[0],
            "response_code": code,
            **more,
        }
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"istio_requests_total{{{body}}} {value}")
    return "\n".join(lines) + "\n"


def retries_samples(calls_ok: int, calls_failed: int, attempts_ok: int, attempts_failed: int) -> list:
    from meshy.metrics.prometheus import parse

    return parse(
        requests_total("source", "minimal-service", BOUNCED, {("200",): calls_ok, ("500",): calls_failed})
        + requests_total("destination", "minimal-service", BOUNCED, {("200",): attempts_ok, ("500",): attempts_failed})
        # another caller's calls and the ingress gateway's reports must not count
        + requests_total("destination", "other-client", BOUNCED, {("500",): 40})
        + requests_total("source", "istio-ingressgateway", MINIMAL, {("200",): 999})
    )


def test_retry_counts_come_from_both_reporters_and_fail_without_retries():
    from meshy.scenarios import retries

    n = 231
    mean, variance = stats.truncated_geometric(0.7, 21)
    start = retries_samples(10, 20, 10, 20)
    attempts = round(mean * n)  # working retries: each call's attempts until a 200
    working = retries.tally(start, retries_samples(10 + n, 20, 10 + n, 20 + attempts - n), attempts, n)
    assert (working.ok, working.upstream) == (n, attempts)
    assert share_check("after", working.ok, n, AFTER, "").passed
    assert mean_check("after", working.upstream, n, mean, variance, "").passed
    assert f"bounced-service's own counter: {attempts}" in working.cross_check()
    assert working.answers() == f"the answers: {n} '200 OK'"
    # No retry policy: the caller's sidecar reports 70% failures and the destination one attempt per call.
    broken = retries.tally(start, retries_samples(10 + 70, 20 + 161, 10 + 70, 20 + 161), app_requests=n)
    assert broken.upstream == n
    assert not share_check("after", broken.ok, n, AFTER, "").passed
    assert not mean_check("after", broken.upstream, n, mean, variance, "").passed
    # Attempts reported only by the caller (no destination reports) are not counted as attempts.
    blind = retries.tally(start, retries_samples(10 + n, 20, 10, 20), app_requests=attempts)
    assert not mean_check("after", blind.upstream, n, mean, variance, "").passed


def gateway_samples(v1: int, v2: int, failed: int = 0) -> list:
    from meshy.metrics.prometheus import parse

    return parse(
        requests_total("source", "istio-ingressgateway", MINIMAL, {("200", "v1"): v1, ("200", "v2"): v2})
        + requests_total("source", "istio-ingressgateway", MINIMAL, {("503", "unknown"): failed})
        + requests_total("destination", "istio-ingressgateway", MINIMAL, {("200", "v2"): 500})  # not a source report
        + requests_total("source", "minimal-service", MINIMAL, {("200", "v2"): 500})  # another caller
    )


def test_split_counts_come_from_the_gateways_reports_per_destination_version():
    from meshy.scenarios.traffic_shift import split_counts

    start = gateway_samples(100, 100)
    weights = {"v1": 50, "v2": 50}
    working = split_counts(start, gateway_samples(100 + 510, 100 + 489), 999)
    assert working == {"v1": 510, "v2": 489}
    assert split_check("50/50", working, weights).passed
    # Weights ignored (everything to v1) fails; so do 503s and requests the gateway never reported.
    assert not split_check("50/50", split_counts(start, gateway_samples(100 + 999, 100), 999), weights).passed
    failing = split_counts(start, gateway_samples(100 + 500, 100 + 490, failed=9), 999)
    assert failing == {"v1": 500, "v2": 490, "failed": 9} and not split_check("x", failing, weights).passed
    unreported = split_counts(start, gateway_samples(100 + 500, 100 + 490), 999)
    assert unreported["failed"] == 9 and not split_check("x", unreported, weights).passed


def bounced(upstream: str, seconds: float) -> Result:
    """minimal-service's answer to POST /bounce, carrying the status line its sidecar gave it."""
    return Result(200, json.dumps({"servedBy": "minimal-service-1", "body": upstream}), seconds)


def served(seconds: float) -> Result:
    return Result(200, json.dumps({"servedBy": "minimal-service-5d9c7b8f4-x7k2p"}), seconds)


def passed(checks) -> bool:
    return all(check.passed for check in checks)


def timeouts_after(cut_share: float, cut_at: float, n: int = 495) -> list[Result]:
    cut = round(cut_share * n)
    return [bounced("504 Gateway Timeout", cut_at + 0.004)] * cut + [bounced("200 OK", 0.05)] * (n - cut)


def test_request_timeouts_pass_when_the_timeout_cuts_and_fail_when_it_is_missing_or_wrong():
    timeout, delay_max = 0.1, 1.0
    assert passed(request_timeouts.judge_after(timeouts_after(0.9, timeout), timeout, delay_max))
    # A stream reset after the headers (reported by minimal-service as 502) is a cut call too.
    reset = timeouts_after(0.9, timeout)[:-1] + [Result(502, "Bad Gateway: the endpoint's answer broke off", 0.1)]
    assert passed(request_timeouts.judge_after(reset, timeout, delay_max))
    # Timeout not applied: every call waits for slow-service.
    uncut = [bounced("200 OK", delay_max * (i + 0.5) / 495) for i in range(495)]
    assert not passed(request_timeouts.judge_after(uncut, timeout, delay_max))
    # A timeout twice as long cuts fewer calls, later.
    assert not passed(request_timeouts.judge_after(timeouts_after(0.8, 2 * timeout), timeout, delay_max))
    # A busy machine adds to slow-service's wait before the sidecar's timer: more calls are cut, all at the timeout.
    assert passed(request_timeouts.judge_after(timeouts_after(0.95, timeout + 0.03), timeout, delay_max))
    # A shorter timeout ends calls before the manifest's value.
    assert not passed(request_timeouts.judge_after(timeouts_after(0.95, timeout / 2), timeout, delay_max))
    # Calls that failed otherwise (e.g. 503 from the sidecar) are not cuts.
    failing = timeouts_after(0.9, timeout)[:-5] + [bounced("503 Service Unavailable", 0.01)] * 5
    assert not passed(request_timeouts.judge_after(failing, timeout, delay_max))


def test_request_timeouts_before_fail_when_something_cuts_without_a_virtualservice():
    timeout, delay_max = 0.1, 1.0
    slow = [bounced("200 OK", 0.05 + 0.1 * i) for i in range(10)]
    assert passed(request_timeouts.judge_before(slow, timeout, delay_max))
    assert not passed(request_timeouts.judge_before(timeouts_after(0.9, timeout, 10), timeout, delay_max))
    # slow-service not slow (DELAY_MAX ignored): the test of the timeout would prove nothing.
    assert not passed(request_timeouts.judge_before([bounced("200 OK", 0.01)] * 10, timeout, delay_max))


def faults(delayed: int, aborted: int, n: int, delay: float) -> list[Result]:
    """n requests: the first `delayed` took the delay; `aborted` of the even-numbered ones were aborted
    (at most half: so the two faults fall on requests independently of each other)."""
    results = []
    for i in range(n):
        seconds = delay + 0.003 if i < delayed else 0.004
        abort = i % 2 == 0 and i // 2 < aborted
        results.append(Result(500, "fault filter abort", seconds) if abort else served(seconds))
    return results


def test_fault_injection_passes_with_both_faults_and_fails_when_one_is_ignored():
    delay, n = 0.25, 433
    working = faults(217, 217, n, delay)
    assert passed(fault_injection.judge_faults(working, delay, 0.5, 500, 0.5))
    assert not passed(fault_injection.judge_faults(faults(0, 217, n, delay), delay, 0.5, 500, 0.5))  # no delay
    assert not passed(fault_injection.judge_faults(faults(217, 0, n, delay), delay, 0.5, 500, 0.5))  # no abort
    assert not passed(fault_injection.judge_faults(faults(n, 217, n, delay), delay, 0.5, 500, 0.5))  # 100% delay
    # A delay of a tenth of the manifest's: nothing reaches the threshold.
    assert not passed(fault_injection.judge_faults(faults(217, 217, n, delay / 10), delay, 0.5, 500, 0.5))
    # The abort answered with another code is not the manifest's abort.
    other_code = [Result(503, "fault filter abort", r.seconds) if r.status == 500 else r for r in working]
    assert not passed(fault_injection.judge_faults(other_code, delay, 0.5, 500, 0.5))


def test_fault_without_percentage_must_inject_nothing():
    none = {"DI": 0, "FI": 0}
    assert passed(fault_injection.judge_unset([served(0.004)] * 135, none, 500))
    # A request stalled by a loaded machine is not a delay: the gateway did not report one.
    assert passed(fault_injection.judge_unset([served(0.004)] * 134 + [served(0.3)], none, 500))
    # Read as 100% (the fault applied to every request), or a single leak: fails.
    assert not passed(fault_injection.judge_unset(faults(135, 68, 135, 0.25), {"DI": 135, "FI": 68}, 500))
    assert not passed(fault_injection.judge_unset([served(0.3)] * 135, {"DI": 1, "FI": 0}, 500))


def test_fault_flags_follow_the_gateways_reports():
    assert passed(fault_injection.judge_flags({"DI": 210, "FI": 221}, 433, 0.5, 221))
    assert not passed(fault_injection.judge_flags({"DI": 0, "FI": 221}, 433, 0.5, 221))  # delays not injected
    assert not passed(fault_injection.judge_flags({"DI": 210, "FI": 0}, 433, 0.5, 221))  # 500s not from the fault
    metrics = (
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_service_name="minimal-service",response_code="500",response_flags="DI,FI"} 9\n'
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_service_name="minimal-service",response_code="200",response_flags="DI"} 9\n'
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_service_name="minimal-service",response_code="500",response_flags="FI"} 12\n'
        'istio_requests_total{reporter="destination",source_workload="istio-ingressgateway",'
        'destination_service_name="minimal-service",response_code="200",response_flags="DI"} 4\n'
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_service_name="kiali",response_code="500",response_flags="FI"} 3\n'
    )
    assert fault_injection.injected(metrics) == {"DI": 18, "FI": 21}
    assert fault_injection.since({"DI": 18, "FI": 21}, {"DI": 20, "FI": 21}) == {"DI": 2, "FI": 0}


def test_fault_shares_read_from_a_route():
    fault = {
        "delay": {"fixed_delay": "0.250s", "percentage": {"numerator": 500000, "denominator": "MILLION"}},
        "abort": {"http_status": 500, "percentage": {"numerator": 50}},
    }
    route = {"typed_per_filter_config": {"envoy.filters.http.fault": fault}}
    assert fault_injection.fault_shares(route) == {"delay": 0.5, "abort": 0.5}
    # Istio's translation without percentage: delay 0 of HUNDRED (zeros omitted), abort's percentage unset.
    unset = {
        "delay": {"fixed_delay": "0.250s", "percentage": {"denominator": "HUNDRED"}},
        "abort": {"http_status": 500},
    }
    route = {"typed_per_filter_config": {"envoy.filters.http.fault": unset}}
    assert fault_injection.fault_shares(route) == {"delay": 0.0, "abort": 0.0}
    assert fault_injection.fault_shares({"route": {"cluster": "x"}}) is None


def test_route_timeout_is_found_in_a_config_dump():
    dump = {"configs": [{"virtual_hosts": [{"routes": [{"route": {"cluster": "c", "timeout": "0.100s"}}]}]}]}
    assert request_timeouts.route_timeout_seen(dump, 0.1)
    assert not request_timeouts.route_timeout_seen(dump, 0.25)


def test_mirroring_passes_with_one_copy_each_and_fails_when_missing_doubled_or_answered_by_v2():
    n = 688
    v1 = Result(200, json.dumps({"servedBy": "minimal-service-5d9c7b8f4-x7k2p"}), 0.002)
    v2 = Result(200, json.dumps({"servedBy": "minimal-service-v2-7f6d5c4b3-q9r8s"}), 0.002)
    assert mirroring.served_by(v1) == mirroring.V1 and mirroring.served_by(v2) == mirroring.V2
    assert passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, n), n, mirror=True))
    assert passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, 0), n, mirror=False))
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, 0), n, mirror=True))  # mirror missing
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, 2 * n), n, mirror=True))  # doubled
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, n - 1), n, mirror=True))  # one lost
    # The caller got the copy's answer (v2 answered instead of v1), or v1 was skipped.
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * (n - 1) + [v2], n, n), n, mirror=True))
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * n, n - 1, n), n, mirror=True))
    # Without the mirror v2 must get nothing.
    assert not passed(mirroring.judge(mirroring.Observed.of([v1] * n, n, 3), n, mirror=False))


def test_circuit_breaking_passes_when_the_pool_sheds_with_uo_and_fails_without_shedding():
    seen = circuit_breaking.Observed
    n = stats.proportion_sample_size(circuit_breaking.HELD_OFF, circuit_breaking.FLOOR, 0.001, 0.999)
    assert passed(circuit_breaking.judge_limited(seen(n, 2, n - 2, n - 2)))
    assert not passed(circuit_breaking.judge_limited(seen(n, n, 0, 0)))  # limits ignored: nothing shed
    assert not passed(circuit_breaking.judge_limited(seen(n, n // 2, n - n // 2, n - n // 2)))  # pool of ~6
    assert not passed(circuit_breaking.judge_limited(seen(n, 2, n - 2, 0)))  # 503s without the UO flag
    assert not passed(circuit_breaking.judge_limited(seen(n, 2, n - 4, n - 4)))  # two calls failed otherwise
    assert passed(circuit_breaking.judge_free(seen(12, 12, 0, 0)))
    assert not passed(circuit_breaking.judge_free(seen(12, 2, 10, 10)))  # shedding without a DestinationRule


def test_overflows_are_read_from_the_callers_reports():
    metrics = (
        'istio_requests_total{reporter="source",source_workload="minimal-service",'
        'destination_service_name="slow-service",response_code="503",response_flags="UO"} 68\n'
        'istio_requests_total{reporter="source",source_workload="minimal-service",'
        'destination_service_name="slow-service",response_code="200",response_flags="-"} 2\n'
        'istio_requests_total{reporter="destination",source_workload="minimal-service",'
        'destination_service_name="slow-service",response_code="503",response_flags="UO"} 5\n'
        'istio_requests_total{reporter="source",source_workload="istio-ingressgateway",'
        'destination_service_name="slow-service",response_code="503",response_flags="UO"} 7\n'
    )
    assert circuit_breaking.overflows(metrics) == 68
    assert circuit_breaking.overflows("") == 0


def test_outlier_detection_passes_when_the_failing_pod_is_ejected_after_three_and_fails_otherwise():
    errors = 3  # flaky-destinationrule-outlier's consecutive5xxErrors
    working = [True, False, True, True] + [False] * 134
    assert passed(outlier_detection.judge_ejection(working, errors))
    # The call right after the ejecting 500 may still reach the pod (Envoy's workers learn of it a moment later).
    assert passed(outlier_detection.judge_ejection([True] * 4 + [False] * 134, errors))
    assert not passed(outlier_detection.judge_ejection([True] * 3 + [False, True] + [False] * 133, errors))
    assert not passed(outlier_detection.judge_ejection([i % 2 == 0 for i in range(138)], errors))  # never ejected
    assert not passed(outlier_detection.judge_ejection([True] * 3 + [False] * 100 + [True], errors))  # back early
    assert not passed(outlier_detection.judge_ejection([True] + [False] * 137, errors))  # ejected after one 500
    assert not passed(outlier_detection.judge_ejection([False] * 138, errors))  # the failing pod never called
    # Without outlier detection about half the calls fail; an ejection already in place shows as none.
    n = stats.proportion_sample_size(0.5, 0.35, 0.001, 0.999)
    assert share_check("x", n // 2, n, 0.5, "").passed and not share_check("x", 0, n, 0.5, "").passed


def test_outlier_detection_is_found_in_a_config_dump():
    dump = {"clusters": [{"outlier_detection": {"consecutive_5xx": 3, "enforcing_consecutive_5xx": 100}}]}
    assert outlier_detection.outlier_seen(dump, 3) and not outlier_detection.outlier_seen(dump, 5)
    assert circuit_breaking.limits_seen({"circuit_breakers": {"thresholds": [{"max_pending_requests": 1}]}})
