"""Envoy v3 JSON (as envoy.py writes it) -> protobuf Any, as ADS carries it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

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
