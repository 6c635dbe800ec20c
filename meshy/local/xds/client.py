"""The backend's handle on the ADS server: hand over snapshots, wait for ACK/NACK, revert."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson

from meshy.errors import MeshyError
from meshy.local.xds.control import CONTROL
from meshy.local.xds.snapshot import Snapshot, snapshot_to_json


class XdsError(MeshyError, RuntimeError):
    pass


@dataclass(frozen=True)
class Outcome:
    nacked: dict[str, str] = field(default_factory=dict)  # proxy -> Envoy's error detail
    pending: dict[str, str] = field(default_factory=dict)  # proxy -> what is still awaited


class XdsClient:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.channel = grpc.insecure_channel(
            f"unix:{socket}",
            options=[
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                # The server may be starting with the mesh: retry within tens of
                # milliseconds, not gRPC's default one second and more.
                ("grpc.initial_reconnect_backoff_ms", 20),
                ("grpc.min_reconnect_backoff_ms", 20),
                ("grpc.max_reconnect_backoff_ms", 200),
            ],
        )

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        stub = self.channel.unary_unary(
            f"/{CONTROL}/{method}", request_serializer=orjson.dumps, response_deserializer=orjson.loads
        )
        try:
            return stub(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise XdsError(error.details() or str(error.code())) from error

    def update(self, snapshots: dict[str, Snapshot], remove: list[str] = (), timeout: float = 10) -> None:
        """Hand over new snapshots; proxies connected now get them at once, others when they connect."""
        request = {"set": {proxy: snapshot_to_json(s) for proxy, s in snapshots.items()}, "remove": list(remove)}
        self.call("Update", request, timeout)

    def wait(self, proxies: list[str], timeout: float) -> Outcome:
        """Until every proxy acknowledged its snapshot, one rejected it, or the timeout."""
        if not proxies:
            return Outcome()
        answer = self.call("Wait", {"proxies": proxies, "timeout": timeout}, timeout + 5)
        return Outcome(answer["nacked"], answer["pending"])

    def revert(self, proxies: list[str], timeout: float = 10) -> None:
        """Every named proxy goes back to its last acknowledged snapshot."""
        self.call("Revert", {"proxies": proxies}, timeout)

    def status(self, timeout: float = 5) -> dict[str, Any]:
        return self.call("Status", {}, timeout)
