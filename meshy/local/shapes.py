"""What the local backend accepts of each kind, field by field.

A shape is a type (str, int, bool, Number), a Duration(), a Choice(...), a
MapOf(shape), a list holding one shape, or a dict of field -> shape. Dicts are
closed: a field that is not listed is refused by name, never ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class Number:
    """int or float."""


@dataclass(frozen=True)
class Duration:
    """A protobuf duration string such as 2s, 100ms or 1.5s."""


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class IntOrString:
    pass


_DURATION = re.compile(r"^(\d+(\.\d+)?)(h|m|s|ms|us|µs|ns)$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"{duration!r} is not a duration such as 2s or 100ms")
    return float(match.group(1)) * _UNITS[match.group(3)]


def check(value: Any, shape: Any, path: str) -> list[str]:
    """Problems of value against shape, each naming the field path."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path} must be a mapping"]
        problems = []
        for key, item in value.items():
            if key not in shape:
                supported = ", ".join(sorted(shape))
                problems.append(f"field {path}.{key} is not supported by the local backend (supported: {supported})")
            else:
                problems += check(item, shape[key], f"{path}.{key}")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path} must be a list"]
        return [p for i, item in enumerate(value) for p in check(item, shape[0], f"{path}[{i}]")]
    if isinstance(shape, MapOf):
        if not isinstance(value, dict):
            return [f"{path} must be a mapping"]
        return [p for key, item in value.items() for p in check(item, shape.value, f"{path}.{key}")]
    if isinstance(shape, Duration):
        if not isinstance(value, str) or not _DURATION.match(value):
            return [f"{path} must be a duration such as 2s or 100ms, not {value!r}"]
        return []
    if isinstance(shape, Choice):
        if value not in shape.values:
            return [f"{path} must be one of {', '.join(shape.values)}, not {value!r}"]
        return []
    if isinstance(shape, IntOrString):
        return (
            []
            if isinstance(value, (int, str)) and not isinstance(value, bool)
            else [f"{path} must be a number or name"]
        )
    if shape is Number:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path} must be a number, not {value!r}"]
    if shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path} must be an integer, not {value!r}"]
    if shape is str:
        return [] if isinstance(value, str) else [f"{path} must be a string, not {value!r}"]
    if shape is bool:
        return [] if isinstance(value, bool) else [f"{path} must be true or false, not {value!r}"]
    raise TypeError(f"unknown shape {shape!r}")


# --- Kubernetes kinds -------------------------------------------------------

METADATA = {"name": str, "namespace": str, "labels": MapOf(str), "annotations": MapOf(str)}
PROBE = {
    "httpGet": {"path": str, "port": IntOrString(), "scheme": Choice(("HTTP",))},
    "initialDelaySeconds": int,
    "periodSeconds": int,
    "timeoutSeconds": int,
    "failureThreshold": int,
    "successThreshold": int,
}
CONTAINER = {
    "name": str,
    "image": str,
    "imagePullPolicy": Choice(("Always", "IfNotPresent", "Never")),
    "ports": [{"name": str, "containerPort": int, "protocol": Choice(("TCP",))}],
    "env": [{"name": str, "value": str}],
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
    "resources": {"limits": MapOf(IntOrString()), "requests": MapOf(IntOrString())},
}
DEPLOYMENT = {
    "replicas": int,
    "selector": {"matchLabels": MapOf(str)},
    "template": {"metadata": {"labels": MapOf(str), "annotations": MapOf(str)}, "spec": {"containers": [CONTAINER]}},
}
SERVICE = {
    "selector": MapOf(str),
    "ports": [{"name": str, "port": int, "targetPort": IntOrString(), "protocol": Choice(("TCP",))}],
    "type": Choice(("ClusterIP",)),
}

# --- Istio kinds (networking.istio.io) --------------------------------------

STRING_MATCH = {"exact": str, "prefix": str, "regex": str}
PERCENT = {"value": Number}
PORT_SELECTOR = {"number": int}
DESTINATION = {"host": str, "subset": str, "port": PORT_SELECTOR}
HEADER_OPS = {"set": MapOf(str), "add": MapOf(str), "remove": [str]}
HTTP_ROUTE = {
    "name": str,
    "match": [
        {
            "name": str,
            "uri": STRING_MATCH,
            "headers": MapOf(STRING_MATCH),
            "method": STRING_MATCH,
            "authority": STRING_MATCH,
            "port": int,
            "gateways": [str],
        }
    ],
    "route": [{"destination": DESTINATION, "weight": int}],
    "redirect": {"uri": str, "authority": str, "redirectCode": int},
    "rewrite": {"uri": str, "authority": str},
    "timeout": Duration(),
    "retries": {"attempts": int, "perTryTimeout": Duration(), "retryOn": str},
    "fault": {
        "delay": {"fixedDelay": Duration(), "percentage": PERCENT, "percent": int},
        "abort": {"httpStatus": int, "percentage": PERCENT},
    },
    "mirror": DESTINATION,
    "mirrorPercentage": PERCENT,
    "headers": {"request": HEADER_OPS, "response": HEADER_OPS},
}
VIRTUAL_SERVICE = {"hosts": [str], "gateways": [str], "exportTo": [str], "http": [HTTP_ROUTE]}
GATEWAY = {
    "selector": MapOf(str),
    "servers": [
        {
            "port": {"number": int, "name": str, "protocol": Choice(("HTTP", "HTTP2"))},
            "hosts": [str],
            "name": str,
        }
    ],
}
TRAFFIC_POLICY = {
    "loadBalancer": {"simple": Choice(("ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"))},
    "connectionPool": {
        "tcp": {"maxConnections": int, "connectTimeout": Duration()},
        "http": {
            "http1MaxPendingRequests": int,
            "http2MaxRequests": int,
            "maxRequestsPerConnection": int,
            "maxRetries": int,
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": int,
        "consecutiveErrors": int,
        "consecutiveGatewayErrors": int,
        "interval": Duration(),
        "baseEjectionTime": Duration(),
        "maxEjectionPercent": int,
    },
}
DESTINATION_RULE = {
    "host": str,
    "trafficPolicy": TRAFFIC_POLICY,
    "subsets": [{"name": str, "labels": MapOf(str), "trafficPolicy": TRAFFIC_POLICY}],
    "exportTo": [str],
}
SERVICE_ENTRY = {
    "hosts": [str],
    "addresses": [str],
    "ports": [{"number": int, "name": str, "protocol": Choice(("HTTP", "HTTP2")), "targetPort": int}],
    "location": Choice(("MESH_EXTERNAL", "MESH_INTERNAL")),
    "resolution": Choice(("STATIC", "DNS")),
    "endpoints": [{"address": str, "ports": MapOf(int), "labels": MapOf(str)}],
    "exportTo": [str],
}

ISTIO_VERSIONS = ("networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1")
KINDS: dict[str, tuple[tuple[str, ...], Any]] = {
    "Namespace": (("v1",), None),
    "Deployment": (("apps/v1",), DEPLOYMENT),
    "Service": (("v1",), SERVICE),
    "Gateway": (ISTIO_VERSIONS, GATEWAY),
    "VirtualService": (ISTIO_VERSIONS, VIRTUAL_SERVICE),
    "DestinationRule": (ISTIO_VERSIONS, DESTINATION_RULE),
    "ServiceEntry": (ISTIO_VERSIONS, SERVICE_ENTRY),
}


# Fields the local backend accepts but cannot honour; `local.apply` names each one it meets.
NO_LOCAL_EFFECT = {
    "exportTo": "every workload sees every resource",
    "resources": "processes are not resource-limited",
    "imagePullPolicy": "nothing is pulled",
    "livenessProbe": "restarts follow process exits instead",
}


def without_effect(value: Any, path: str = "spec") -> list[str]:
    """Paths of NO_LOCAL_EFFECT fields present in value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in NO_LOCAL_EFFECT:
                found.append(f"{path}.{key} has no local effect ({NO_LOCAL_EFFECT[key]})")
            else:
                found += without_effect(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += without_effect(item, f"{path}[{index}]")
    return found
