"""What one build of the mesh takes over from the previous one, so a small apply costs what it changes.

routes.py builds a VirtualService's routes from the resource, where they go (the
mesh or a gateway, and a port), the Istio release, the registry's host names and
ports and the DestinationRules - nothing else: not the endpoints, not the other
VirtualServices. Those values are kept per VirtualService and place, and reused
while every input is the same. What is derived from a model object (its digest,
its Envoy JSON) is kept for as long as that very object lives.

A memo never changes a result; tests/test_incremental.py compares every proxy an
incremental run builds with a build from scratch.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from meshy.local.model import Route, VirtualHost
from meshy.local.release import IstioRelease
from meshy.local.resources import Resource
from meshy.local.routes import Context

T = TypeVar("T")
# Sorted keys, and 1, 1.0 and true kept apart: a memo hit needs the very same content.
EXACT = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def content(resource: Resource) -> bytes:
    return orjson.dumps(resource.to_dict(), option=EXACT)


@dataclass(frozen=True)
class RouteInputs:
    """Everything besides the VirtualService itself that its routes are built from."""

    release: IstioRelease
    ports: tuple[tuple[str, tuple[int, ...]], ...]  # registry host -> its port numbers
    rules: bytes  # the DestinationRules by host, exactly

    @classmethod
    def of(cls, context: Context) -> RouteInputs:
        ports = tuple((host, tuple(entry.ports)) for host, entry in sorted(context.registry.items()))
        rules = orjson.dumps({host: rule.to_dict() for host, rule in sorted(context.rules.items())}, option=EXACT)
        return cls(context.release, ports, rules)


@dataclass
class Entry:
    resource: Resource
    exact: bytes | None  # content(resource), computed once it is needed
    value: Any
    used: int  # the build that last asked for it


@dataclass
class HostEntry:
    host: VirtualHost
    routes: tuple[Route, ...]  # what the host was made from
    used: int


class BuildMemo:
    """Values of earlier builds, held by the backend object across its applies (no global state)."""

    def __init__(self) -> None:
        self.inputs: RouteInputs | None = None
        self.build = 0
        self.entries: dict[tuple[Any, ...], Entry] = {}
        self.hosts: dict[tuple[str, str], HostEntry] = {}  # by (proxy, virtual host name)
        # make -> id(item) -> (a weak reference to item, make(item))
        self.derived: dict[Callable, dict[int, tuple[weakref.ref, Any]]] = {}

    def begin(self, context: Context) -> None:
        """A new build: forget what it cannot reuse (other inputs) or no longer needs (unused last build)."""
        inputs = RouteInputs.of(context)
        if inputs != self.inputs:
            self.inputs = inputs
            self.entries.clear()
        self.build += 1
        last = self.build - 1
        self.entries = {key: entry for key, entry in self.entries.items() if entry.used >= last}
        self.hosts = {key: item for key, item in self.hosts.items() if item.used >= last}

    def of(self, build: Callable[[Resource, Context], T], vs: Resource, context: Context) -> T:
        """build(vs, context), reused while vs has the same content and the build's other inputs hold."""
        key = (build, vs.kind, vs.namespace, vs.name, context.gateway, context.port)
        entry = self.entries.get(key)
        if entry is not None and entry.resource is not vs:
            entry.exact = entry.exact or content(entry.resource)
            exact = content(vs)
            if exact != entry.exact:
                entry = None
            else:
                entry.resource = vs
        if entry is None:
            entry = self.entries[key] = Entry(vs, None, build(vs, context), self.build)
        entry.used = self.build
        return entry.value

    def virtual_host(
        self,
        owner: str,
        name: str,
        domains: tuple[str, ...],
        routes: tuple[Route, ...],
        order: Callable[[tuple[Route, ...]], list[Route]],
    ) -> VirtualHost:
        """VirtualHost(name, domains, order(routes)): last build's object when made from these very routes."""
        key = (owner, name)
        known = self.hosts.get(key)
        if known is not None and known.host.domains == domains and same_objects(known.routes, routes):
            # Updated in place: a small apply leaves no new objects behind for the unchanged hosts.
            known.used = self.build
            return known.host
        host = VirtualHost(name, domains, tuple(order(routes)))
        self.hosts[key] = HostEntry(host, routes, self.build)
        return host

    def derive(self, make: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        """make(item) for each item, kept while the item lives: model objects are frozen, so it cannot go stale."""
        table = self.derived.get(make)
        if table is None:
            table = self.derived[make] = {}
        values = []
        for item in items:  # one loop for all: this runs for every host of a gateway on every apply
            key = id(item)
            known = table.get(key)
            if known is not None and known[0]() is item:
                values.append(known[1])
                continue
            value = make(item)
            table[key] = (weakref.ref(item, lambda _, key=key: table.pop(key, None)), value)
            values.append(value)
        return values


def same_objects(known: tuple[Route, ...], routes: tuple[Route, ...]) -> bool:
    """The same route objects in the same order (identity: no deep comparison)."""
    if known is routes:
        return True
    return len(known) == len(routes) and all(a is b for a, b in zip(known, routes, strict=True))


def derive(memo: BuildMemo | None, make: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """make(item) for each item, through the memo when there is one."""
    return memo.derive(make, items) if memo is not None else [make(item) for item in items]
