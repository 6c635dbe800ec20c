"""Scenario counts read from Istio's standard metrics (istio_requests_total), whichever backend served them.

Every query here runs on the same samples on both backends: on kind, those a
proxy serves on its stats/prometheus (its own reports only); locally, the
mesh-wide endpoint narrowed to one proxy's reports by `reported_by`.
"""

from __future__ import annotations

from collections import Counter

from meshy.metrics.prometheus import Sample

REQUESTS = "istio_requests_total"
TCP_OPENED = "istio_tcp_connections_opened_total"


def reported_by(samples: list[Sample], workload: str) -> list[Sample]:
    """The samples a workload's own proxy reports: as the source of its outbound requests, as the
    destination of its inbound ones - what its stats/prometheus holds on a cluster. Sidecars report
    inbound traffic as destination and outbound as source, gateways as source only (istio/istio:
    the stats_inbound/stats_outbound filters per context in manifests/charts/istio-control/
    istio-discovery/templates/telemetryv2_1.8.yaml at 1.8.6; workloadMode in
    pilot/pkg/model/telemetry.go at 1.28.10 and 1.30.3, GATEWAY -> CLIENT)."""
    return [
        s
        for s in samples
        if (reporter := s.labels.get("reporter")) in ("source", "destination")
        and s.labels.get(f"{reporter}_workload") == workload
    ]


def to_service(sample: Sample, service: str) -> bool:
    """Whether a sample's destination service is `service`, named by host (FQDN) or short name."""
    return service in (sample.labels.get("destination_service"), sample.labels.get("destination_service_name"))


def requests(samples: list[Sample], service: str, **labels: str) -> int:
    """sum(istio_requests_total{destination service, labels...})."""
    return int(sum(s.value for s in samples if s.matches(REQUESTS, labels) and to_service(s, service)))


def requests_by(
    samples: list[Sample], service: str, keys: tuple[str, ...], metric: str = REQUESTS, **labels: str
) -> Counter:
    """sum by (keys) (istio_requests_total{destination service, labels...}), keyed by tuples of label values
    (or another of Istio's counters, such as TCP_OPENED)."""
    counts: Counter = Counter()
    for sample in samples:
        if sample.matches(metric, labels) and to_service(sample, service):
            counts[tuple(sample.labels.get(key, "") for key in keys)] += int(sample.value)
    return counts


def increase(before: Counter, after: Counter) -> Counter:
    """What counters gained between two reads (PromQL's increase() over the interval, without resets)."""
    return Counter({key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)})
