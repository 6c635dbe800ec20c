"""The ADS server: State-of-the-World pushes to each proxy, ACK/NACK bookkeeping, a control API.

Protocol as Envoy's xDS documentation describes it (envoy/api/envoy/service/
discovery/v3/discovery.proto at v1.40.0): a request whose response_nonce is
the last one sent acknowledges (version_info) or rejects (error_detail) that
response; a request with an older nonce is stale and ignored; clusters and
listeners are wildcard subscriptions, route configurations are asked for by
name as listeners appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from meshy.local.xds.control import CONTROL
from meshy.local.xds.encode import Encoder
from meshy.local.xds.snapshot import (
    NAMED,
    SHORT,
    TYPES,
    Resources,
    Snapshot,
    snapshot_from_json,
    snapshot_to_json,
)


@dataclass
class TypeState:
    """What one stream was sent of one type, and what the proxy said about it."""

    nonce: str = ""
    sent_version: str = ""
    sent_names: frozenset[str] = frozenset()
    acked_version: str = ""
    acked_names: frozenset[str] = frozenset()
    nack: tuple[str, str] | None = None  # (version, Envoy's error detail)
    subscribed: frozenset[str] | None = None  # None: every resource of the type (wildcard)


@dataclass
class Stream:
    node: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    types: dict[str, TypeState] = field(default_factory=dict)


class Store:
    """Snapshots wanted and last acknowledged per proxy, with their encoded resources."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wanted: dict[str, Snapshot] = {}
        self.good: dict[str, Snapshot] = {}
        self.encoded: dict[tuple[str, str, str], dict[str, any_pb2.Any]] = {}
        self.encoder = Encoder()
        self.streams: dict[str, Stream] = {}
        self.changed = asyncio.Condition()
        self.nonces = itertools.count(1)
        self.dirty = asyncio.Event()
        # Changes of `good` made, and the last of them on disk: see persisted().
        self.generation = 0
        self.saved = 0
        self.flush_now = asyncio.Event()
        if path.exists():
            saved = orjson.loads(path.read_bytes())
            self.good = {proxy: snapshot_from_json(data) for proxy, data in saved.items()}
            self.wanted = dict(self.good)

    # --- encoding -------------------------------------------------------------

    def encode(self, proxy: str, url: str, resources: Resources) -> dict[str, any_pb2.Any]:
        key = (proxy, url, resources.version)
        if key not in self.encoded:
            self.encoded[key] = {name: self.encoder.to_any(item) for name, item in resources.items.items()}
        return self.encoded[key]

    def forget_encodings(self, proxy: str) -> None:
        keep = {
            (proxy, url, r.version)
            for snap in (self.wanted.get(proxy), self.good.get(proxy))
            if snap
            for url, r in snap.items()
        }
        for key in [k for k in self.encoded if k[0] == proxy and k not in keep]:
            del self.encoded[key]

    # --- pushes ---------------------------------------------------------------

    def response(self, stream: Stream, url: str) -> discovery_pb2.DiscoveryResponse | None:
        resources = self.wanted.get(stream.node, {}).get(url)
        if resources is None:
            return None
        state = stream.types.setdefault(url, TypeState())
        encoded = self.encode(stream.node, url, resources)
        names = frozenset(encoded) if state.subscribed is None else frozenset(encoded) & state.subscribed
        state.nonce = str(next(self.nonces))
        state.sent_version, state.sent_names = resources.version, names
        return discovery_pb2.DiscoveryResponse(
            version_info=resources.version,
            resources=[encoded[name] for name in sorted(names)],
            type_url=url,
            nonce=state.nonce,
        )

    def push(self, proxy: str, urls: list[str]) -> None:
        stream = self.streams.get(proxy)
        if stream is None:
            return
        for url in TYPES:
            # A type the proxy has not asked for yet is sent when it asks.
            if url in urls and url in stream.types:
                response = self.response(stream, url)
                if response is not None:
                    stream.queue.put_nowait(response)

    def set(self, proxy: str, snapshot: Snapshot) -> None:
        current = self.wanted.get(proxy, {})
        for url, resources in snapshot.items():
            self.encode(proxy, url, resources)  # a malformed resource fails here, before anything is sent
        changed = [
            url
            for url in TYPES
            if url in snapshot and (url not in current or current[url].version != snapshot[url].version)
        ]
        self.wanted[proxy] = snapshot
        self.push(proxy, changed)
        self.forget_encodings(proxy)

    def remove(self, proxy: str) -> None:
        self.wanted.pop(proxy, None)
        self.good.pop(proxy, None)
        self.forget_encodings(proxy)
        self.mark_dirty()

    # --- what proxies said ------------------------------------------------------

    def outcome(self, proxy: str) -> tuple[str, str]:
        """("acked" | "nacked" | "pending", detail) for the proxy's wanted snapshot."""
        wanted = self.wanted.get(proxy)
        if wanted is None:
            return "acked", ""
        stream = self.streams.get(proxy)
        if stream is None:
            return "pending", "not connected"
        waiting = []
        for url in TYPES:
            resources = wanted.get(url)
            if resources is None:
                continue
            state = stream.types.get(url)
            if url in NAMED and not resources.items and state is None:
                continue  # nothing asks for routes (or secrets)
            if state is None:
                waiting.append(SHORT[url])
                continue
            if state.nack and state.nack[0] == resources.version:
                return "nacked", state.nack[1]
            # Every route configuration (secret) must have been asked for and sent: a new
            # listener asks for its routes only after it arrived.
            names_ok = url not in NAMED or state.acked_names >= set(resources.items)
            if state.acked_version != resources.version or not names_ok:
                waiting.append(SHORT[url])
        if waiting:
            return "pending", "acknowledgement of " + ", ".join(waiting)
        return "acked", ""

    async def on_request(self, stream: Stream, request: discovery_pb2.DiscoveryRequest) -> None:
        url = request.type_url
        if url not in TYPES:
            return
        state = stream.types.get(url)
        first = state is None
        state = state or stream.types.setdefault(url, TypeState())
        if not first and request.response_nonce != state.nonce:
            return  # about an older response
        if request.response_nonce:
            if request.HasField("error_detail"):
                state.nack = (state.sent_version, request.error_detail.message)
            else:
                state.acked_version, state.acked_names, state.nack = request.version_info, state.sent_names, None
                self.remember_good(stream.node)
        names = frozenset(request.resource_names) if url in NAMED else None
        resend = first or names != state.subscribed
        state.subscribed = names
        if resend:
            response = self.response(stream, url)
            if response is not None:
                stream.queue.put_nowait(response)
        async with self.changed:
            self.changed.notify_all()

    def remember_good(self, proxy: str) -> None:
        if (
            self.outcome(proxy)[0] == "acked"
            and proxy in self.wanted
            and self.good.get(proxy) is not self.wanted[proxy]
        ):
            self.good[proxy] = self.wanted[proxy]
            self.mark_dirty()

    def mark_dirty(self) -> None:
        self.generation += 1
        self.dirty.set()

    async def saver(self) -> None:
        """Persist the acknowledged snapshots, at most once per tick however many proxies ACK (sooner when
        a backend waits for them: persisted())."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            generation = self.generation
            data = orjson.dumps({proxy: snapshot_to_json(snap) for proxy, snap in self.good.items()})
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(self.path)
            self.saved = generation
            async with self.changed:
                self.changed.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.flush_now.wait()
            self.flush_now.clear()

    async def persisted(self) -> None:
        """Return once every acknowledgement so far is on disk. A server killed after a backend heard
        "acked" then restarts with that configuration, not an older one whose clusters may lack what the
        proxies now require (seen: a restarted gateway served pre-mTLS clusters, 503 for good)."""
        target = self.generation
        self.flush_now.set()
        async with self.changed:
            await self.changed.wait_for(lambda: self.saved >= target)


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        store = self.store
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        stream = Stream(first.node.id)
        previous = store.streams.get(stream.node)
        store.streams[stream.node] = stream
        if previous is not None:
            previous.queue.put_nowait(None)

        async def read() -> None:
            try:
                await store.on_request(stream, first)
                async for request in request_iterator:
                    await store.on_request(stream, request)
            finally:
                stream.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await stream.queue.get()) is not None:
                yield response
        finally:
            reader.cancel()
            if store.streams.get(stream.node) is stream:
                del store.streams[stream.node]
            async with store.changed:
                store.changed.notify_all()


class Control:
    """The backend's side: set snapshots, wait for the proxies' answers, go back to the last good ones."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def update(self, request: dict[str, Any], context) -> dict[str, Any]:
        try:
            snapshots = {proxy: snapshot_from_json(data) for proxy, data in request.get("set", {}).items()}
            for proxy, snapshot in snapshots.items():
                for url, resources in snapshot.items():
                    self.store.encode(proxy, url, resources)
        except (ValueError, KeyError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        for proxy, snapshot in snapshots.items():
            self.store.set(proxy, snapshot)
        for proxy in request.get("remove", []):
            self.store.remove(proxy)
        return {}

    async def wait(self, request: dict[str, Any], context) -> dict[str, Any]:
        proxies = request["proxies"]
        store = self.store

        def report() -> dict[str, Any]:
            outcomes = {proxy: store.outcome(proxy) for proxy in proxies}
            return {
                "nacked": {p: d for p, (o, d) in outcomes.items() if o == "nacked"},
                "pending": {p: d for p, (o, d) in outcomes.items() if o == "pending"},
            }

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(request["timeout"]):
                async with store.changed:
                    await store.changed.wait_for(lambda: not report()["pending"] or report()["nacked"])
                await store.persisted()
        return report()

    async def revert(self, request: dict[str, Any], context) -> dict[str, Any]:
        for proxy in request["proxies"]:
            good = self.store.good.get(proxy)
            if good is None:
                self.store.wanted.pop(proxy, None)
            else:
                self.store.set(proxy, good)
        return {}

    async def status(self, request: dict[str, Any], context) -> dict[str, Any]:
        store = self.store
        return {
            proxy: {"connected": proxy in store.streams, "outcome": store.outcome(proxy)[0]}
            for proxy in sorted(set(store.wanted) | set(store.streams))
        }

    def handler(self) -> grpc.GenericRpcHandler:
        def method(behaviour):
            return grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=orjson.loads, response_serializer=orjson.dumps
            )

        return grpc.method_handlers_generic_handler(
            CONTROL,
            {
                "Update": method(self.update),
                "Wait": method(self.wait),
                "Revert": method(self.revert),
                "Status": method(self.status),
            },
        )


async def serve(socket: Path, state: Path) -> None:
    store = Store(state)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(store), server)
    server.add_generic_rpc_handlers([Control(store).handler()])
    socket.unlink(missing_ok=True)
    # Owner-only from the moment it exists: the socket is created under this umask.
    os.umask(0o177)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    saver = asyncio.create_task(store.saver())
    try:
        await server.wait_for_termination()
    finally:
        saver.cancel()
