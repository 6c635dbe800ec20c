"""Verdict arithmetic: working numbers pass, numbers of a broken feature fail."""

from __future__ import annotations

import pytest

from meshy import stats
from meshy.scenarios.backends import route_targets
from meshy.scenarios.checks import all_check, exact_check, mean_check, share_check, split_check
from meshy.scenarios.traffic_shift import sample_size
from meshy.scenarios.verdict import Check, Report

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
    assert sample_size(0) == sample_size(100) == stats.zero_events_sample_size(0.01, 0.001)


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
