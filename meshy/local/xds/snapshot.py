"""Per-proxy configuration snapshots: resources by xDS type, each type versioned by its content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
# Push order: nothing names what its proxy lacks yet (clusters and listeners name
# secrets, routes name clusters, listeners name route configurations).
TYPES = (SECRET, CLUSTER, LISTENER, ROUTE)
SHORT = {SECRET: "secrets", CLUSTER: "clusters", LISTENER: "listeners", ROUTE: "routes"}
# Types Envoy asks for by name (as their users appear) rather than as a wildcard.
NAMED = (SECRET, ROUTE)


def digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class Resources:
    """One xDS type of one proxy: its resources by name and the version naming them."""

    version: str
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: list[dict[str, Any]], encoded: list[Any] | None = None) -> Resources:
        """encoded: the same resources with parts already encoded (orjson.Fragment of their sorted-key
        JSON), which gives the same version without encoding those parts again."""
        return cls(digest(resources if encoded is None else encoded), {r["name"]: r for r in resources})

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "resources": list(self.items.values())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resources:
        return cls(data["version"], {r["name"]: r for r in data["resources"]})


Snapshot = dict[str, Resources]  # type URL -> resources


def snapshot_of(
    clusters: list[dict],
    listeners: list[dict],
    routes: list[dict],
    encoded_routes: list[Any] | None = None,
    secrets: list[dict] | None = None,
) -> Snapshot:
    """A proxy's snapshot; `secrets` only for a proxy whose configuration names them (it asks for nothing else)."""
    snapshot = {
        CLUSTER: Resources.of(clusters),
        LISTENER: Resources.of(listeners),
        ROUTE: Resources.of(routes, encoded_routes),
    }
    if secrets:
        snapshot[SECRET] = Resources.of(secrets)
    return snapshot


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    return {url: resources.to_json() for url, resources in snapshot.items()}


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    return {url: Resources.from_json(item) for url, item in data.items()}
