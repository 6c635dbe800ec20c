"""Tails every proxy's JSON access log and keeps Istio's metrics for the whole mesh."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshy.local import topology
from meshy.local.state import state_from_bytes
from meshy.local.statedir import STATE_FILE
from meshy.local.telemetry.accesslog import JSON_FILE, Entry, Tail, parse_line
from meshy.local.telemetry.metrics import IstioMetrics, LabelKey, label_key, labels_of
from meshy.local.telemetry.peers import Peers
from meshy.local.telemetry.rotation import MAX_BYTES, due, rotate

Observer = Callable[[dict[str, str], Entry], None]


def peers_of(state_dir: Path) -> Peers:
    """The mesh's workloads and services as the state directory describes them now."""
    state = state_from_bytes((state_dir / STATE_FILE).read_bytes())
    pods, _ = topology.pods(state.resources, state.allocation, state.layout)
    return Peers.build(state.resources, pods, topology.gateways(state.layout), state.hosts)


@dataclass
class Collector:
    """Reads what proxies appended since the last poll; thread-safe (the HTTP server polls on every scrape)."""

    state_dir: Path
    metrics: IstioMetrics = field(default_factory=IstioMetrics)
    observers: list[Observer] = field(default_factory=list)
    tails: dict[str, Tail] = field(default_factory=dict)
    peers: Peers = field(default_factory=Peers)
    state_mtime: float = -1.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[tuple, tuple[dict[str, str], LabelKey]] = field(default_factory=dict)
    max_bytes: int = MAX_BYTES  # each access log's cap (see rotation.py)
    rotations: int = 0

    def refresh_peers(self) -> None:
        # Re-read the state only when an apply changed it: a scrape stays cheap.
        try:
            mtime = (self.state_dir / STATE_FILE).stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self.state_mtime:
            self.peers, self.state_mtime = peers_of(self.state_dir), mtime
            self.cache.clear()

    def labels(self, entry: Entry) -> tuple[dict[str, str], LabelKey]:
        # Under load most requests repeat a handful of label sets: work each out once.
        ip = entry.upstream_host.rpartition(":")[0], entry.downstream_remote.rpartition(":")[0]
        cache_key = (
            entry.proxy,
            entry.listener,
            entry.upstream_cluster,
            *ip,
            entry.code,
            entry.flags,
            entry.protocol,
            entry.peer_principal,
            entry.local_principal,
        )
        found = self.cache.get(cache_key)
        if found is None:
            labels = labels_of(entry, self.peers)
            found = self.cache[cache_key] = (labels, label_key(labels))
        return found

    def poll(self) -> int:
        """Fold new entries into the metrics; return how many there were."""
        with self.lock:
            self.refresh_peers()
            count = 0
            # A proxy whose log was just moved aside has no file until it reopens: its tail still reads the rest.
            found = {path.parent.name: path for path in (self.state_dir / "envoy").glob(f"*/{JSON_FILE}")}
            for proxy in sorted(found.keys() | self.tails.keys()):
                tail = self.tails.get(proxy) or self.tails.setdefault(proxy, Tail(found[proxy]))
                while lines := tail.read():
                    count += self.fold(proxy, lines)
                self.rotate_if_due(proxy, tail)
            return count

    def rotate_if_due(self, proxy: str, tail: Tail) -> None:
        # Only a file read to its end, never one moved aside whose rest the tail is still reading.
        try:
            current = tail.path.stat().st_ino == tail.inode
        except FileNotFoundError:
            return
        if current and due(tail.path.parent, tail.offset, self.max_bytes):
            self.rotations += rotate(self.state_dir, proxy, tail.path.parent)

    def fold(self, proxy: str, lines: list[str]) -> int:
        count = 0
        for line in lines:
            entry = parse_line(proxy, line)
            if entry is None:
                continue
            labels, key = self.labels(entry)
            self.metrics.record(key, entry)
            for observer in self.observers:
                observer(labels, entry)
            count += 1
        return count

    def exposition(self) -> str:
        self.poll()
        with self.lock:
            return self.metrics.exposition()
