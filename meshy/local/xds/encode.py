"""Envoy v3 JSON (as envoy.py writes it) -> protobuf Any, as ADS carries it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import orjson
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

PREFIX = "type.googleapis.com/"


def type_name(type_url: str) -> str:
    return type_url.removeprefix(PREFIX)


def ensure_type(name: str) -> None:
    """Import the generated module of a message type, so JSON `@type` fields resolve.

    The module's file name is not derivable from the message name, so the whole
    proto package (one directory, a few modules) is imported.
    """
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(name)
        return
    except KeyError:
        pass
    package = name.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ValueError(f"unknown Envoy type {name!r}") from error
    for info in pkgutil.iter_modules(module.__path__):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")
    pool.FindMessageTypeByName(name)


def type_urls(value: Any) -> set[str]:
    """Every `@type` named anywhere in a JSON document."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("@type"), str):
                found.add(item["@type"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def to_any(resource: dict[str, Any]) -> any_pb2.Any:
    """One resource (a dict with `@type`) as a packed Any; raises ValueError on a malformed one."""
    for url in type_urls(resource):
        ensure_type(type_name(url))
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name(resource["@type"]))
    message = message_factory.GetMessageClass(descriptor)()
    body = {k: v for k, v in resource.items() if k != "@type"}
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as error:
        raise ValueError(f"{resource.get('name', '?')}: {error}") from error
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


ROUTE_CONFIGURATION = "envoy.config.route.v3.RouteConfiguration"
# Virtual hosts remembered across encodes; past this, the memory starts afresh.
MAX_REMEMBERED_HOSTS = 100_000


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Encoder:
    """Encodes resources, reusing the bytes of every virtual host it encoded before.

    A gateway's route configuration holds one virtual host per VirtualService
    host; a small apply changes one of them. Protobuf's wire format lets a
    repeated field be written element by element in any position, so the
    configuration is its other fields followed by each host's cached bytes.
    """

    def __init__(self) -> None:
        self.hosts: dict[bytes, bytes] = {}
        ensure_type(ROUTE_CONFIGURATION)
        descriptor = descriptor_pool.Default().FindMessageTypeByName(ROUTE_CONFIGURATION)
        field = descriptor.fields_by_name["virtual_hosts"]
        self.host_class = message_factory.GetMessageClass(field.message_type)
        self.host_tag = varint(field.number << 3 | 2)  # wire type 2: length-delimited

    def to_any(self, resource: dict[str, Any]) -> any_pb2.Any:
        if type_name(resource["@type"]) != ROUTE_CONFIGURATION or not resource.get("virtual_hosts"):
            return to_any(resource)
        packed = to_any({k: v for k, v in resource.items() if k != "virtual_hosts"})
        if len(self.hosts) > MAX_REMEMBERED_HOSTS:
            self.hosts.clear()
        parts = [packed.value]
        for host in resource["virtual_hosts"]:
            body = self.host_bytes(host)
            parts += [self.host_tag, varint(len(body)), body]
        packed.value = b"".join(parts)
        return packed

    def host_bytes(self, host: dict[str, Any]) -> bytes:
        key = orjson.dumps(host)
        body = self.hosts.get(key)
        if body is None:
            for url in type_urls(host):
                ensure_type(type_name(url))
            message = self.host_class()
            try:
                json_format.ParseDict(host, message)
            except json_format.ParseError as error:
                raise ValueError(f"virtual host {host.get('name', '?')}: {error}") from error
            body = self.hosts[key] = message.SerializeToString()
        return body
