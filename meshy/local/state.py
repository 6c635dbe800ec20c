"""The mesh's saved state (state.json) as data.

Kept apart from the backend so that readers of the state alone - the
dashboard's metrics collector - do not load the translation layer, gRPC and
the CA with it (about 15 MB of a process that should stay small).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from meshy.local import topology
from meshy.local.release import DEFAULT_RELEASE, IstioRelease, release_of
from meshy.local.resources import ResourceError, ResourceSet

# What reading a damaged (truncated, half-written, hand-edited) state file raises.
DAMAGED = (ValueError, KeyError, TypeError, AttributeError, ResourceError)


@dataclass
class State:
    resources: ResourceSet = field(default_factory=ResourceSet)
    allocation: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    layout: topology.Layout | None = None
    external: bool = False
    pair: str | None = None  # the version pair local.up started, e.g. 1.36-istio-1.30; it rules every apply
    # Per proxy, the hash of its model: a proxy whose hash is unchanged gets no push.
    digests: dict[str, str] = field(default_factory=dict)
    # Every "address:port" a listener binds: a new one is checked before anything changes.
    binds: list[str] = field(default_factory=list)

    @property
    def istio(self) -> str | None:
        return self.pair.split("-istio-")[1] if self.pair else None

    @property
    def release(self) -> IstioRelease:
        return release_of(self.istio) if self.istio else DEFAULT_RELEASE


def state_from_bytes(raw: bytes) -> State:
    """The state a state file holds; raises one of DAMAGED for a damaged one."""
    data = orjson.loads(raw)
    pair = data.get("pair")
    return State(
        ResourceSet.from_list(data["resources"], State(pair=pair).release),
        dict(data["allocation"]),
        dict(data["hosts"]),
        topology.Layout(**data["layout"]),
        bool(data.get("external", False)),
        pair,
        dict(data.get("digests", {})),
        list(data.get("binds", [])),
    )
