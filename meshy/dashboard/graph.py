"""The versioned-app graph over a sliding window of requests, as Kiali draws it.

Nodes are gateways, services and workloads by version (grouped by app);
edges come from the source reporters: caller -> service, and service ->
the version that answered. The destination reporters add what the caller
never sees: attempts (retries) per edge. Requests a gateway forwards for a
client outside the mesh enter as "unknown" -> gateway, as Kiali draws them;
Istio has no series for that edge (gateways report as source only), so it
comes from the gateway's own reports whose downstream peer is no workload.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from meshy.local.telemetry.accesslog import Entry
from meshy.local.telemetry.metrics import DOWNSTREAM

WINDOW = 60.0  # seconds an edge's figures cover (Kiali's default "last 1m")
SERIES_STEP = 2.0
SERIES_POINTS = 150  # five minutes of history at SERIES_STEP


@dataclass
class Bucket:
    """One second of one edge: counts and a log-scale duration histogram (memory stays flat under load)."""

    requests: int = 0
    errors: int = 0
    durations: dict[int, int] = field(default_factory=dict)

    def add(self, code: int, duration_ms: float) -> None:
        self.requests += 1
        self.errors += code >= 500 or code == 0
        index = duration_index(duration_ms)
        self.durations[index] = self.durations.get(index, 0) + 1


# Duration buckets grow by 5%: a quantile is read to within 2.5%, as Kiali reads Istio's histograms, only finer.
SMALLEST_MS, GROWTH = 0.01, 1.05


def duration_index(value: float) -> int:
    return 0 if value <= SMALLEST_MS else int(math.log(value / SMALLEST_MS) / math.log(GROWTH)) + 1


def duration_value(index: int) -> float:
    """The middle of a bucket (geometric), the smallest bucket as its bound."""
    return SMALLEST_MS if index == 0 else SMALLEST_MS * GROWTH ** (index - 0.5)


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # gateway | service | workload | app | unknown
    parent: str = ""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    requests: int
    rate: float
    error_share: float
    p50_ms: float
    p99_ms: float
    split: float  # share of the source's requests on this edge
    attempts: int  # as the destination reporters counted them


UNKNOWN = Node("unknown", "unknown", "unknown")


def workload_node(labels: dict[str, str], side: str) -> Node:
    workload = labels[f"{side}_workload"]
    if workload == UNKNOWN.id:
        return UNKNOWN
    if workload.startswith("istio-") and workload.endswith("gateway"):
        return Node(f"workload:{workload}", workload, "gateway")
    app, version = labels[f"{side}_app"], labels[f"{side}_version"]
    return Node(f"workload:{workload}", f"{app} {version}", "workload", f"app:{app}")


def service_node(labels: dict[str, str]) -> Node:
    host = labels["destination_service"]
    return Node(f"service:{host}", labels["destination_service_name"], "service")


def quantile(histogram: dict[int, int], q: float) -> float:
    """The q-quantile of a duration histogram (nearest rank, read at the bucket's middle)."""
    count = sum(histogram.values())
    if not count:
        return math.nan
    rank, seen = max(1, math.ceil(q * count)), 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return duration_value(index)
    return math.nan


@dataclass
class Graph:
    """Fed by the collector (as an observer); read by the dashboard's handlers."""

    clock: object = time.monotonic
    # second -> (source node, target node) -> what the source reporters saw
    seconds: dict[int, dict[tuple[str, str], Bucket]] = field(default_factory=dict)
    # second -> (caller node, answering node) -> attempts the destination reporters saw
    attempts: dict[int, dict[tuple[str, str], int]] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    series: deque[tuple[float, dict[str, int], dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=SERIES_POINTS)
    )
    pending_versions: dict[str, int] = field(default_factory=dict)
    pending_codes: dict[str, int] = field(default_factory=dict)

    def observe(self, labels: dict[str, str], entry: Entry) -> None:
        second = int(self.clock())
        if entry.reporter == "destination":
            key = (workload_node(labels, "source").id, workload_node(labels, "destination").id)
            tried = self.attempts.setdefault(second, {})
            tried[key] = tried.get(key, 0) + 1
            version = f"{labels['destination_app']} {labels['destination_version']}"
            self.pending_versions[version] = self.pending_versions.get(version, 0) + 1
            return
        source, service = workload_node(labels, "source"), service_node(labels)
        self.remember(source, service)
        edges = self.seconds.setdefault(second, {})
        if source.kind == "gateway" and labels.get(DOWNSTREAM) == UNKNOWN.id:
            self.remember(UNKNOWN)
            edges.setdefault((UNKNOWN.id, source.id), Bucket()).add(entry.code, entry.duration_ms)
        edges.setdefault((source.id, service.id), Bucket()).add(entry.code, entry.duration_ms)
        destination = workload_node(labels, "destination")
        if destination.kind != "unknown":
            self.remember(destination)
            edges.setdefault((service.id, destination.id), Bucket()).add(entry.code, entry.duration_ms)
        code = str(entry.code)
        self.pending_codes[code] = self.pending_codes.get(code, 0) + 1

    def remember(self, *nodes: Node) -> None:
        for node in nodes:
            self.nodes[node.id] = node
            if node.parent:
                self.nodes[node.parent] = Node(node.parent, node.parent.removeprefix("app:"), "app")

    def tick(self) -> None:
        """Close one step of the time series and forget seconds older than the window."""
        now = self.clock()
        self.series.append((now, dict(self.pending_versions), dict(self.pending_codes)))
        self.pending_versions.clear()
        self.pending_codes.clear()
        for table in (self.seconds, self.attempts):
            for second in [s for s in table if s < now - WINDOW]:
                del table[second]

    def edges(self) -> list[Edge]:
        now = self.clock()
        span = max(1e-9, min(WINDOW, now - self.started))
        merged: dict[tuple[str, str], Bucket] = {}
        for second, edges in self.seconds.items():
            if second < now - WINDOW:
                continue
            for key, bucket in edges.items():
                total = merged.setdefault(key, Bucket())
                total.requests += bucket.requests
                total.errors += bucket.errors
                for index, count in bucket.durations.items():
                    total.durations[index] = total.durations.get(index, 0) + count
        attempts: dict[tuple[str, str], int] = {}
        for second, tried in self.attempts.items():
            if second >= now - WINDOW:
                for key, count in tried.items():
                    attempts[key] = attempts.get(key, 0) + count
        out_of: dict[str, int] = {}
        for (source, _), bucket in merged.items():
            out_of[source] = out_of.get(source, 0) + bucket.requests
        keys = set(merged)
        edges = []
        for (source, target), bucket in sorted(merged.items()):
            # A caller's attempts on a service are the destination reports from it to any of the service's versions.
            tried = sum(n for (s, t), n in attempts.items() if s == source and (target, t) in keys)
            edges.append(
                Edge(
                    source,
                    target,
                    bucket.requests,
                    bucket.requests / span,
                    bucket.errors / bucket.requests,
                    quantile(bucket.durations, 0.5),
                    quantile(bucket.durations, 0.99),
                    bucket.requests / out_of[source],
                    tried,
                )
            )
        return edges
