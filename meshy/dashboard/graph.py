"""The versioned-app graph over a sliding window of requests, as Kiali draws it.

Nodes are gateways, services and workloads by version (grouped by app);
edges come from the source reporters: caller -> service, and service ->
the version that answered. The destination reporters add what the caller
never sees: attempts (retries) per edge.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from meshy.local.telemetry.accesslog import Entry

WINDOW = 60.0  # seconds an edge's figures cover (Kiali's default "last 1m")
SERIES_STEP = 2.0
SERIES_POINTS = 150  # five minutes of history at SERIES_STEP


@dataclass(frozen=True)
class Observation:
    at: float
    source: str
    target: str
    code: int
    duration_ms: float
    reporter: str


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


def workload_node(labels: dict[str, str], side: str) -> Node:
    workload = labels[f"{side}_workload"]
    if workload == "unknown":
        return Node("unknown", "unknown", "unknown")
    if workload.startswith("istio-") and workload.endswith("gateway"):
        return Node(f"workload:{workload}", workload, "gateway")
    app, version = labels[f"{side}_app"], labels[f"{side}_version"]
    return Node(f"workload:{workload}", f"{app} {version}", "workload", f"app:{app}")


def service_node(labels: dict[str, str]) -> Node:
    host = labels["destination_service"]
    return Node(f"service:{host}", labels["destination_service_name"], "service")


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of the window's durations (exact, not bucketed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Graph:
    """Fed by the collector (as an observer); read by the dashboard's handlers."""

    clock: object = time.monotonic
    window: deque[Observation] = field(default_factory=deque)
    nodes: dict[str, Node] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    series: deque[tuple[float, dict[str, int], dict[str, int]]] = field(
        default_factory=lambda: deque(maxlen=SERIES_POINTS)
    )
    pending_versions: dict[str, int] = field(default_factory=dict)
    pending_codes: dict[str, int] = field(default_factory=dict)

    def observe(self, labels: dict[str, str], entry: Entry) -> None:
        now = self.clock()
        if entry.reporter == "destination":
            source, target = workload_node(labels, "source"), workload_node(labels, "destination")
            self.window.append(Observation(now, source.id, target.id, entry.code, entry.duration_ms, "destination"))
            version = f"{labels['destination_app']} {labels['destination_version']}"
            self.pending_versions[version] = self.pending_versions.get(version, 0) + 1
            return
        source, service = workload_node(labels, "source"), service_node(labels)
        self.remember(source, service)
        self.window.append(Observation(now, source.id, service.id, entry.code, entry.duration_ms, "source"))
        destination = workload_node(labels, "destination")
        if destination.kind != "unknown":
            self.remember(destination)
            self.window.append(Observation(now, service.id, destination.id, entry.code, entry.duration_ms, "source"))
        code = str(entry.code)
        self.pending_codes[code] = self.pending_codes.get(code, 0) + 1

    def remember(self, *nodes: Node) -> None:
        for node in nodes:
            self.nodes[node.id] = node
            if node.parent:
                self.nodes[node.parent] = Node(node.parent, node.parent.removeprefix("app:"), "app")

    def tick(self) -> None:
        """Close one step of the time series and forget requests older than the window."""
        now = self.clock()
        self.series.append((now, dict(self.pending_versions), dict(self.pending_codes)))
        self.pending_versions.clear()
        self.pending_codes.clear()
        while self.window and self.window[0].at < now - WINDOW:
            self.window.popleft()

    def edges(self) -> list[Edge]:
        now = self.clock()
        span = max(1e-9, min(WINDOW, now - self.started))
        grouped: dict[tuple[str, str], list[Observation]] = {}
        attempts: dict[tuple[str, str], int] = {}
        for item in self.window:
            if item.at < now - WINDOW:
                continue
            if item.reporter == "destination":
                attempts[(item.source, item.target)] = attempts.get((item.source, item.target), 0) + 1
            else:
                grouped.setdefault((item.source, item.target), []).append(item)
        out_of: dict[str, int] = {}
        for (source, _), items in grouped.items():
            out_of[source] = out_of.get(source, 0) + len(items)
        keys = set(grouped)
        edges = []
        for (source, target), items in sorted(grouped.items()):
            durations = [i.duration_ms for i in items]
            errors = sum(1 for i in items if i.code >= 500 or i.code == 0)
            # A caller's attempts on a service are the destination reports from it to any of the service's versions.
            tried = sum(n for (s, t), n in attempts.items() if s == source and (target, t) in keys)
            edges.append(
                Edge(
                    source,
                    target,
                    len(items),
                    len(items) / span,
                    errors / len(items),
                    quantile(durations, 0.5),
                    quantile(durations, 0.99),
                    len(items) / out_of[source],
                    tried,
                )
            )
        return edges
