"""Scenario counts read from Istio's standard metrics (istio_requests_total), whichever backend served them."""

from __future__ import annotations

from meshy.metrics.prometheus import Sample, total

REQUESTS = "istio_requests_total"


def cluster_host(cluster: str) -> str:
    """outbound|PORT|SUBSET|HOST -> HOST (Istio's cluster naming, which the local backend shares)."""
    parts = cluster.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        raise ValueError(f"{cluster!r} is not an Istio outbound cluster name (outbound|PORT|SUBSET|HOST)")
    return parts[3]


def upstream_requests(samples: list[Sample], workload: str, service: str) -> int:
    """Requests a workload's proxy sent to a service, every attempt included.

    Inside the mesh the destination's sidecar reports each attempt; a
    service outside the mesh has no sidecar, so the caller's (source) reports
    count instead - there a retry would go uncounted.
    """
    destination = total(
        samples, REQUESTS, reporter="destination", source_workload=workload, destination_service=service
    )
    inside = any(
        s.name == REQUESTS
        and s.labels.get("reporter") == "destination"
        and s.labels.get("destination_service") == service
        for s in samples
    )
    if inside:
        return int(destination)
    return int(total(samples, REQUESTS, reporter="source", source_workload=workload, destination_service=service))
