"""Istio's standard HTTP metrics, built from access-log entries and served as Prometheus text.

Names, labels and histogram buckets follow Istio's standard metrics
(istio.io "Istio Standard Metrics"; 20 duration buckets counting +Inf, as
tests/integration/telemetry/api/setup_test.go in istio/istio 1.30.3 expects).
One entry is one request seen by one reporter, so each request is counted
once by its source and once per attempt by its destination.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from meshy.local.telemetry.accesslog import Entry
from meshy.local.telemetry.peers import UNKNOWN, Peers, Service, Workload
from meshy.metrics.prometheus import escape

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"
# Istio's TCP metrics: one access-log line is one connection, logged when it closes.
TCP_OPENED = "istio_tcp_connections_opened_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"
TCP_SENT = "istio_tcp_sent_bytes_total"
TCP_RECEIVED = "istio_tcp_received_bytes_total"
TCP_COUNTERS = (TCP_OPENED, TCP_CLOSED, TCP_SENT, TCP_RECEIVED)

DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                    1800000, 3600000)  # fmt: skip
BYTES_BUCKETS = tuple(10.0**power for power in range(10))

LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
HELP = {
    REQUESTS: ("counter", "Requests, counted once per reporter (every attempt on the destination side)."),
    DURATION: ("histogram", "Request duration in milliseconds, as each reporter saw it."),
    REQUEST_BYTES: ("histogram", "HTTP request body size in bytes."),
    RESPONSE_BYTES: ("histogram", "HTTP response body size in bytes."),
    TCP_OPENED: ("counter", "TCP connections opened."),
    TCP_CLOSED: ("counter", "TCP connections closed."),
    TCP_SENT: ("counter", "Bytes sent to the downstream during TCP connections."),
    TCP_RECEIVED: ("counter", "Bytes received from the downstream during TCP connections."),
}
# Labels Istio's TCP metrics leave out (they describe HTTP responses).
NOT_TCP = ("response_code", "grpc_response_status")

LabelKey = tuple[str, ...]

# Not one of Istio's labels and never exported: the workload at the other end of a gateway's downstream
# connection, for the graph's "unknown" -> gateway edge. Istio has no series for it - gateways report as
# source only (workloadMode in istio/istio pilot/pkg/model/telemetry.go at 1.30.3: GATEWAY -> CLIENT).
DOWNSTREAM = "downstream_workload"


def labels_of(entry: Entry, peers: Peers) -> dict[str, str]:
    """Istio's labels for one entry, from the reporting proxy's point of view."""
    me = peers.by_proxy.get(entry.proxy, Workload())
    if entry.reporter == "source":
        source, destination = me, peers.at(entry.upstream_host) if entry.upstream_host else Workload()
        service = peers.service_of_cluster(entry.upstream_cluster)
        security = UNKNOWN  # Istio's source reporters leave it unknown
        principals = (entry.local_principal, entry.peer_principal)
    else:
        source, destination = peers.at(entry.downstream_remote), me
        port = entry.listener.removeprefix("inbound_")
        service = peers.service_at(entry.proxy, int(port)) if port.isdigit() else Service()
        security = "mutual_tls" if entry.peer_principal else "none"
        principals = (entry.peer_principal, entry.local_principal)
    return {
        "reporter": entry.reporter,
        **source.labels("source"),
        "source_principal": principals[0] or UNKNOWN,
        **destination.labels("destination"),
        "destination_principal": principals[1] or UNKNOWN,
        **service.labels(),
        "request_protocol": "tcp" if entry.tcp else "grpc" if entry.protocol == "grpc" else "http",
        "response_code": str(entry.code),
        "grpc_response_status": "",
        "response_flags": entry.flags,
        "connection_security_policy": security,
        DOWNSTREAM: peers.at(entry.downstream_remote).name,
    }


def label_key(labels: dict[str, str]) -> LabelKey:
    return tuple(labels[name] for name in LABELS)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        running, result = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts or [0] * (len(self.bounds) + 1), strict=True):
            running += count
            result.append(("+Inf" if bound == math.inf else format_number(bound), running))
        return result


@dataclass
class IstioMetrics:
    """Counters and histograms keyed by Istio's label values (in LABELS order)."""

    requests: dict[LabelKey, int] = field(default_factory=dict)
    histograms: dict[str, dict[LabelKey, Histogram]] = field(
        default_factory=lambda: {DURATION: {}, REQUEST_BYTES: {}, RESPONSE_BYTES: {}}
    )
    tcp: dict[str, dict[LabelKey, int]] = field(default_factory=lambda: {name: {} for name in TCP_COUNTERS})

    def record(self, key: LabelKey, entry: Entry) -> None:
        """Count one entry under its label values (see label_key)."""
        if entry.tcp:
            for name, value in (
                (TCP_OPENED, 1),
                (TCP_CLOSED, 1),
                (TCP_SENT, entry.response_bytes),
                (TCP_RECEIVED, entry.request_bytes),
            ):
                self.tcp[name][key] = self.tcp[name].get(key, 0) + value
            return
        self.requests[key] = self.requests.get(key, 0) + 1
        for name, bounds, value in (
            (DURATION, DURATION_BUCKETS, entry.duration_ms),
            (REQUEST_BYTES, BYTES_BUCKETS, entry.request_bytes),
            (RESPONSE_BYTES, BYTES_BUCKETS, entry.response_bytes),
        ):
            self.histograms[name].setdefault(key, Histogram(bounds)).observe(value)

    def exposition(self) -> str:
        """Prometheus text format 0.0.4."""
        lines = header(REQUESTS)
        lines += [f"{REQUESTS}{{{label_text(key)}}} {value}" for key, value in sorted(self.requests.items())]
        for name, series in self.histograms.items():
            lines += header(name)
            for key, histogram in sorted(series.items()):
                labels = label_text(key)
                lines += [f'{name}_bucket{{{labels},le="{le}"}} {n}' for le, n in histogram.cumulative()]
                lines.append(f"{name}_sum{{{labels}}} {format_number(histogram.total)}")
                lines.append(f"{name}_count{{{labels}}} {histogram.count}")
        for name, series in self.tcp.items():
            if series:
                lines += header(name)
                lines += [f"{name}{{{label_text(key, NOT_TCP)}}} {value}" for key, value in sorted(series.items())]
        return "\n".join(lines) + "\n"


def header(name: str) -> list[str]:
    kind, text = HELP[name]
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def label_text(key: LabelKey, leave_out: tuple[str, ...] = ()) -> str:
    return ",".join(
        f'{name}="{escape(value)}"' for name, value in zip(LABELS, key, strict=True) if name not in leave_out
    )


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
