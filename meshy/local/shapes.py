"""What the local backend accepts of each kind, field by field, and the value rules.

A shape is a type (str, int, bool, Number), a Duration(), a Choice(...), a
Range(low, high), a Name(...), a Host(...), a MapOf(shape), a list holding one
shape, or a dict of field -> shape; Required(shape) marks a field that must be
present. Dicts are closed: a field that is not listed is refused by name, never
ignored. The value rules follow the Kubernetes API server
(k8s.io/apimachinery/pkg/util/validation/validation.go) and Istio's validation
(pkg/config/validation/validation.go at the matrix's tags).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import re2


class Number:
    """int or float."""


@dataclass(frozen=True)
class Duration:
    """A protobuf duration string such as 2s, 100ms or 1.5s; Istio wants >= 1ms, in whole milliseconds."""

    allow_zero: bool = False  # 0s means "unset" (a session cookie's ttl)


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]
    ignore_case: bool = False


@dataclass(frozen=True)
class MapOf:
    value: Any
    key: Any = None  # a shape for the keys (Name, LabelKey); None: any text
    total_bytes: int | None = None  # a cap on the UTF-8 size of all keys and values together


@dataclass(frozen=True)
class IntOrString:
    """A port number 1-65535 or an IANA service name (Kubernetes targetPort, probe port)."""


@dataclass(frozen=True)
class Range:
    """An integer from low to high, both included."""

    low: int
    high: int


@dataclass(frozen=True)
class Percent:
    """A number from 0 to 100 (Istio's Percent.value)."""


@dataclass(frozen=True)
class Name:
    """An object name: DNS-1123 subdomain, DNS-1123 label, DNS-1035 label, or a C identifier."""

    syntax: str  # subdomain | label | label1035 | c_identifier | label_key | label_value | port_name | port_number


@dataclass(frozen=True)
class Host:
    """A host as Istio takes it: a DNS name, optionally a leading '*.' or '*'; gateway servers may add 'ns/'."""

    namespaced: bool = False
    # A name Istio's webhook checks as DNS-1123 (a VirtualService's or a Gateway server's hosts):
    # lowercase labels without '_' and a top-level label that is not all digits, unless it is an IP.
    dns1123: bool = False


@dataclass(frozen=True)
class Regex:
    """A regular expression in RE2's grammar (what Envoy compiles)."""


@dataclass(frozen=True)
class Text:
    """A string of at most `longest` characters without control characters (line breaks allowed if multiline)."""

    longest: int
    multiline: bool = False


@dataclass(frozen=True)
class Address:
    """An IP address or CIDR block (ServiceEntry addresses)."""


@dataclass(frozen=True)
class EnvValue:
    """An environment value: any text without control characters, and not both kinds of quotes."""


@dataclass(frozen=True)
class HeaderValue:
    """A header value Envoy's header formatter reads: % is escaped as %% or opens %COMMAND% / %COMMAND(...)%."""


@dataclass(frozen=True)
class Required:
    shape: Any
    nonempty: bool = False  # a list or mapping that must hold at least one item


PORT = Range(1, 65535)
# Envoy caps a duration at about 10,000 years (google.protobuf.Duration).
MAX_SECONDS = 315_576_000_000
_DURATION = re.compile(r"^(\d{1,15}(\.\d{1,9})?)(h|m|s|ms|us|µs|ns)$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_SYNTAX = {
    "subdomain": (re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"), 253),
    "label": (re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), 63),
    "label1035": (re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), 63),
    "c_identifier": (re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"), 1000),
    "label_value": (re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"), 63),
    "port_name": (re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), 63),
    "port_number": (
        re.compile(r"^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"),
        5,
    ),
    "header": (re.compile(r"^:?[-!#$%&'*+.^_`|~0-9A-Za-z]+$"), 256),
    "gateway_ref": (re.compile(r"^(mesh|([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"), 317),
    "export_to": (re.compile(r"^(\.|\*|~|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"), 63),
    # k8s.io/api core/v1 validation: a Secret's data keys are IsConfigMapKey (not ".", nor starting
    # with "..", which a mounted Secret would turn into a path out of its directory).
    "secret_key": (re.compile(r"^(?!\.\.)(?!\.$)[-._a-zA-Z0-9]+$"), 253),
    "cipher_suite": (re.compile(r"^[-A-Z0-9_\[\]|]+$"), 128),
}
_RULE = {
    "subdomain": "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)",
    "label": "a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
    "label1035": "a DNS-1035 label (a lower-case letter, then letters, digits and '-', at most 63)",
    "c_identifier": "a C identifier (letters, digits and '_', not starting with a digit)",
    "label_key": "a label key ([prefix/]name: letters, digits, '-', '_', '.', at most 63)",
    "label_value": "a label value (letters, digits, '-', '_', '.', at most 63)",
    "port_name": "an IANA port name (lower-case letters, digits and '-', at most 15)",
    "port_number": "a port number from 1 to 65535",
    "header": "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
    "gateway_ref": "mesh or a Gateway's [namespace/]name",
    "export_to": "'.', '*' or a namespace name",
    "secret_key": "a Secret key (letters, digits, '-', '_' and '.'; not '.', nor starting with '..')",
    "cipher_suite": "an OpenSSL/BoringSSL cipher suite name such as ECDHE-RSA-AES256-GCM-SHA384",
}
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Sizes that fail later, outside the backend, unless refused here: a header value Envoy takes (the
# wheel's `envoy --mode validate`: "value length must be at most 16384 bytes"); Linux's MAX_ARG_STRLEN (32 pages) for
# one NAME=value string given to execve, less room for the name; Kubernetes' 256 KiB cap on an
# object's annotations (apimachinery pkg/api/validation/objectmeta.go TotalAnnotationSizeLimitB).
HEADER_VALUE_BYTES = 16384
ENV_VALUE_BYTES = 128 * 1024 - 1024
ANNOTATION_BYTES = 256 * 1024
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What is left of a header value once %% escapes and complete %COMMAND% / %COMMAND(args)% are taken out
# must hold no %, as Envoy's header parser requires (Istio checks the same, validation.go ValidateHTTPHeaderValue).
_FORMATTER = re.compile(r"%%|%[A-Z][A-Z0-9_]*(\([^%]*\))?(:[0-9]+)?%")


def brief(value: Any, limit: int = 40) -> str:
    """A value as it appears in a one-line message: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain(value: Any) -> str:
    """A name as written when it is short printable text; abbreviated and quoted otherwise."""
    if isinstance(value, str) and len(value) <= 60 and value.isprintable():
        return value
    return brief(value, 40)


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"{brief(duration)} is not a duration such as 2s or 100ms")
    return float(match.group(1)) * _UNITS[match.group(3)]


def seconds_or_none(value: str) -> float | None:
    return seconds(value) if _DURATION.match(value) else None


def duration_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not _DURATION.match(value):
        return "must be a duration such as 2s or 100ms"
    amount = seconds(value)
    if amount < 1e-3:
        return "must be at least 1ms"
    if amount > MAX_SECONDS:
        return f"must be at most {MAX_SECONDS}s"
    if round(amount * 1e9) % 1_000_000:
        return "must be whole milliseconds (Istio's precision)"
    return None


def name_problem(value: Any, syntax: str) -> str | None:
    if syntax == "port_number" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads a port key as a number, JSON as text
    if not isinstance(value, str):
        return f"must be {_RULE[syntax]}"
    if syntax == "label_key":
        prefix, _, name = value.rpartition("/")
        ok = bool(_LABEL_NAME.match(name)) and len(name) <= 63
        if prefix:
            ok = ok and len(prefix) <= 253 and bool(_SYNTAX["subdomain"][0].match(prefix))
        return None if ok else f"must be {_RULE[syntax]}"
    pattern, longest = _SYNTAX[syntax]
    ok = len(value) <= longest and bool(pattern.match(value))
    if syntax == "port_name":
        ok = ok and "--" not in value and any(c.isalpha() for c in value) and len(value) <= 15
    if syntax == "subdomain" and ok and not value:
        ok = False
    return None if ok else f"must be {_RULE[syntax]}"


def host_problem(value: Any, namespaced: bool) -> str | None:
    rule = "must be a host name such as web, a.example.org or *.example.org"
    if not isinstance(value, str) or not value:
        return rule
    if namespaced and "/" in value:
        namespace, value = value.split("/", 1)
        if namespace not in ("*", ".", "~") and name_problem(namespace, "label"):
            return "must be HOST or NAMESPACE/HOST with NAMESPACE '*', '.' or a DNS-1123 label"
    if value == "*":
        return None
    labels = value[2:] if value.startswith("*.") else value
    if len(value) > 255 or not all(_DNS_LABEL.match(part) and len(part) <= 63 for part in labels.split(".")):
        return rule
    return None


def dns1123_problem(value: str, gateway: bool) -> str | None:
    """agent.ValidateWildcardDomain and validateSidecarOrGatewayHostnamePart (1.8.6, 1.30.3)."""
    namespace, _, name = value.rpartition("/")
    if namespace == "~":
        return "must not use the namespace '~' (Istio allows it only in Sidecars)"
    if gateway and name != "*" and "." not in name:
        return f"must be a fully qualified name in a Gateway (short name {plain(name)} refused by Istio)"
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    labels = name.split(".")
    if any(_DNS1123_LABEL.match(label) is None for label in labels[1 if labels[0] == "*" else 0 :]):
        return "must be lowercase DNS-1123 labels (a-z, 0-9, '-'), as Istio checks hosts"
    if labels[-1].isdigit():
        return "must not end in an all-numeric label unless it is an IP address"
    return None


def re2_program_size(pattern: str) -> int | None:
    """The size RE2 (Envoy's regex engine) compiles a pattern to, or None when RE2 refuses it."""
    options = re2.Options()
    options.log_errors = False  # the refusal is reported in one line, not on stderr
    try:
        return re2.compile(pattern, options)._regexp.ProgramSize()
    except re2.error:
        return None


def regex_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a regular expression"
    if value == "*":
        return None  # Istio's own "any value" for header matches (route.go canBeConvertedToPresentMatch)
    if re2_program_size(value) is None:
        return "is not a regular expression RE2 (Envoy's engine) accepts"
    return None


def text_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if _CONTROL.search(value):
        return "must not contain line breaks or control characters"
    return None


def field_occurrences(value: Any, shape: Any, prefix: str = "spec", at: tuple = ()) -> list[tuple[str, tuple]]:
    """(dotted path, concrete path) of every field present in value; map keys are data, not fields."""
    if isinstance(shape, Required):
        shape = shape.shape
    found = []
    if isinstance(value, list) and isinstance(shape, list):
        for index, item in enumerate(value):
            found += field_occurrences(item, shape[0], prefix, at + (index,))
    elif isinstance(value, dict) and isinstance(shape, MapOf):
        for key, item in value.items():
            found += field_occurrences(item, shape.value, prefix, at + (key,))
    elif isinstance(value, dict) and isinstance(shape, dict):
        for key, item in value.items():
            found.append((f"{prefix}.{key}", at + (key,)))
            found += field_occurrences(item, shape.get(key), f"{prefix}.{key}", at + (key,))
    return found


def written(at: tuple, prefix: str = "spec") -> str:
    """A concrete path as a message shows it: spec.http[0].directResponse."""
    return prefix + "".join(f"[{step}]" if isinstance(step, int) else f".{plain(step)}" for step in at)


def check(value: Any, shape: Any, path: str) -> list[str]:
    """Problems of value against shape, each naming the field path, the rule and the value."""
    if isinstance(shape, Required):
        shape = shape.shape
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path} must be a mapping, not {brief(value)}"]
        problems = []
        for key, item in value.items():
            if key not in shape:
                supported = ", ".join(sorted(shape))
                problems.append(f"field {path}.{plain(key)} is not supported locally (supported: {supported})")
            else:
                problems += check(item, shape[key], f"{path}.{plain(key)}")
        for key, item in shape.items():
            if isinstance(item, Required):
                if key not in value or value[key] is None:
                    problems.append(f"{path}.{key} is required")
                elif item.nonempty and not value[key]:
                    problems.append(f"{path}.{key} must not be empty")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path} must be a list, not {brief(value)}"]
        return [p for i, item in enumerate(value) for p in check(item, shape[0], f"{path}[{i}]")]
    if isinstance(shape, MapOf):
        if not isinstance(value, dict):
            return [f"{path} must be a mapping, not {brief(value)}"]
        problems = []
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in value.items())
        if shape.total_bytes is not None and size > shape.total_bytes:
            return [f"{path} must hold at most {shape.total_bytes} bytes of keys and values, not {size}"]
        for key, item in value.items():
            key_problem = check(key, shape.key, f"{path} key") if shape.key else check(key, str, f"{path} key")
            problems += key_problem or check(item, shape.value, f"{path}.{plain(key)}")
        return problems
    problem = scalar_problem(value, shape)
    return [f"{path} {problem}, not {brief(value)}"] if problem else []


def scalar_problem(value: Any, shape: Any) -> str | None:
    if isinstance(shape, Duration):
        if shape.allow_zero and isinstance(value, str) and duration_problem(value) and seconds_or_none(value) == 0:
            return None
        return duration_problem(value)
    if isinstance(shape, Choice):
        if shape.ignore_case and isinstance(value, str):
            value = value.upper()
        return None if value in shape.values else f"must be one of {', '.join(shape.values)}"
    if isinstance(shape, Name):
        return name_problem(value, shape.syntax)
    if isinstance(shape, Host):
        return host_problem(value, shape.namespaced) or (
            dns1123_problem(value, shape.namespaced) if shape.dns1123 else None
        )
    if isinstance(shape, Regex):
        return regex_problem(value)
    if isinstance(shape, Address):
        try:
            ipaddress.ip_network(value, strict=False)
        except (TypeError, ValueError):
            return "must be an IP address or CIDR block such as 10.0.0.1 or 10.0.0.0/24"
        return None
    if isinstance(shape, EnvValue):
        if text_problem(value):
            return text_problem(value)
        if "'" in value and '"' in value:
            return "must not hold both ' and \" (supervisord, which starts local processes, cannot carry that)"
        if len(value.encode()) > ENV_VALUE_BYTES:
            return f"must be at most {ENV_VALUE_BYTES} bytes (Linux caps one NAME=value string at 128 KiB)"
        return None
    if isinstance(shape, HeaderValue):
        if text_problem(value):
            return text_problem(value)
        if len(value.encode()) > HEADER_VALUE_BYTES:
            return f"must be at most {HEADER_VALUE_BYTES} bytes (Envoy's HeaderValue limit)"
        if "%" in _FORMATTER.sub("", value):
            return "must write a literal % as %% (a single % starts an Envoy %COMMAND%)"
        return None
    if isinstance(shape, Text):
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > shape.longest:
            return f"must be {shape.longest} characters or fewer"
        return text_problem(re.sub(r"[\r\n\t]", "", value) if shape.multiline else value)
    if isinstance(shape, IntOrString):
        if isinstance(value, int) and not isinstance(value, bool):
            return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535 or a port name"
        return name_problem(value, "port_name") and "must be a port number from 1 to 65535 or a port name"
    if isinstance(shape, Range):
        rule = f"must be an integer from {shape.low} to {shape.high}"
        ok = isinstance(value, int) and not isinstance(value, bool) and shape.low <= value <= shape.high
        return None if ok else rule
    if isinstance(shape, Percent):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100
        return None if ok else "must be a number from 0 to 100"
    if shape is Number:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2**53
        return None if ok else "must be a number"
    if shape is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
        return None if ok else "must be an integer"
    if shape is str:
        return text_problem(value)
    if shape is bool:
        return None if isinstance(value, bool) else "must be true or false"
    raise TypeError(f"unknown shape {shape!r}")


# --- Kubernetes kinds -------------------------------------------------------

LABELS = MapOf(Name("label_value"), key=Name("label_key"))
METADATA = {
    "name": Required(Name("subdomain")),
    "namespace": Name("label"),
    "labels": LABELS,
    "annotations": MapOf(str, key=Name("label_key"), total_bytes=ANNOTATION_BYTES),
}
PROBE = {
    "httpGet": {"path": str, "port": IntOrString(), "scheme": Choice(("HTTP",))},
    "initialDelaySeconds": Range(0, 3600),
    "periodSeconds": Range(1, 3600),
    "timeoutSeconds": Range(1, 3600),
    "failureThreshold": Range(1, 1000),
    "successThreshold": Range(1, 1000),
}
CONTAINER = {
    "name": Required(Name("label")),
    "image": Required(str),
    "imagePullPolicy": Choice(("Always", "IfNotPresent", "Never")),
    "ports": [{"name": Name("port_name"), "containerPort": Required(PORT), "protocol": Choice(("TCP",))}],
    "env": [{"name": Required(Name("c_identifier")), "value": EnvValue()}],
    "readinessProbe": PROBE,
    "livenessProbe": PROBE,
    "resources": {"limits": MapOf(IntOrString()), "requests": MapOf(IntOrString())},
}
# A local bound: each replica is two processes on a shared machine.
MAX_REPLICAS = 200
DEPLOYMENT = {
    "replicas": Range(0, MAX_REPLICAS),
    "selector": Required({"matchLabels": Required(LABELS, nonempty=True)}),
    "template": Required(
        {
            "metadata": {
                "labels": LABELS,
                "annotations": MapOf(str, key=Name("label_key"), total_bytes=ANNOTATION_BYTES),
            },
            "spec": Required(
                {"containers": Required([CONTAINER], nonempty=True), "serviceAccountName": Name("subdomain")}
            ),
        }
    ),
}
SERVICE = {
    "selector": LABELS,
    "ports": Required(
        [{"name": Name("label"), "port": Required(PORT), "targetPort": IntOrString(), "protocol": Choice(("TCP",))}],
        nonempty=True,
    ),
    "type": Choice(("ClusterIP",)),
}

# --- Istio kinds (networking.istio.io), as istio/api's networking/v1alpha3/*.proto define them -------------

# Istio parses protocols case-insensitively (pkg/config/protocol/instance.go Parse).
ISTIO_PROTOCOL = Choice(("HTTP", "HTTP2", "HTTPS", "TLS", "TCP"), ignore_case=True)
STRING_MATCH = {"exact": str, "prefix": str, "regex": Regex()}
PERCENT = {"value": Percent()}
PORT_SELECTOR = {"number": Required(PORT)}
DESTINATION = {"host": Required(Host()), "subset": Name("label"), "port": PORT_SELECTOR}
HEADER_OPS = {
    "set": MapOf(HeaderValue(), key=Name("header")),
    "add": MapOf(HeaderValue(), key=Name("header")),
    "remove": [Name("header")],
}
HTTP_ROUTE = {
    "name": str,
    "match": [
        {
            "name": str,
            "uri": STRING_MATCH,
            "headers": MapOf(STRING_MATCH, key=Name("header")),
            "withoutHeaders": MapOf(STRING_MATCH, key=Name("header")),
            "queryParams": MapOf(STRING_MATCH),
            "ignoreUriCase": bool,
            "method": STRING_MATCH,
            "authority": STRING_MATCH,
            "port": PORT,
            "gateways": [Name("gateway_ref")],
        }
    ],
    "route": [
        {
            "destination": Required(DESTINATION),
            "weight": Range(0, 2**31 - 1),
            "headers": {"request": HEADER_OPS, "response": HEADER_OPS},
        }
    ],
    "redirect": {
        "uri": str,
        "authority": Host(),
        "redirectCode": Range(0, 399),  # 0 is unset (301); webhook.py refuses 1-299
        "scheme": Choice(("http", "https")),
        "port": PORT,
        "derivePort": Choice(("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")),
    },
    # Istio's webhook and route.go cap a direct response body at 1 MiB.
    "directResponse": {
        "status": Required(Range(200, 599)),
        "body": {"string": Text(2**20, multiline=True), "bytes": Text(2**20)},
    },
    "corsPolicy": {
        "allowOrigins": [STRING_MATCH],
        "allowOrigin": [str],
        "allowMethods": [Name("header")],
        "allowHeaders": [Name("header")],
        "exposeHeaders": [Name("header")],
        "maxAge": Duration(),
        "allowCredentials": bool,
    },
    "rewrite": {"uri": str, "authority": Host()},
    "timeout": Duration(),
    "retries": {"attempts": Range(0, 2**31 - 1), "perTryTimeout": Duration(), "retryOn": str},
    "fault": {
        "delay": {"fixedDelay": Required(Duration()), "percentage": PERCENT, "percent": Range(0, 100)},
        "abort": {"httpStatus": Required(Range(200, 599)), "percentage": PERCENT},
    },
    "mirror": {"host": Required(Host()), "subset": Name("label"), "port": PORT_SELECTOR},
    "mirrorPercentage": PERCENT,
    "mirrors": [{"destination": Required(DESTINATION), "percentage": PERCENT}],
    "headers": {"request": HEADER_OPS, "response": HEADER_OPS},
}
# TCPRoute: at a gateway Istio reads only a match's port and gateways (gateway.go l4SingleMatch at 1.30.3).
TCP_ROUTE = {
    "match": [{"port": PORT, "gateways": [Name("gateway_ref")]}],
    "route": [{"destination": Required(DESTINATION), "weight": Range(0, 2**31 - 1)}],
}
# TLSRoute: at a gateway Istio reads a match's sniHosts, port and gateways (gateway.go
# buildGatewayNetworkFiltersFromTLSRoutes and l4SingleMatch at 1.30.3); passthrough.py builds them.
TLS_ROUTE = {
    "match": [{"sniHosts": [Host(dns1123=True)], "port": PORT, "gateways": [Name("gateway_ref")]}],
    "route": TCP_ROUTE["route"],
}
VIRTUAL_SERVICE = {
    "hosts": Required([Host(dns1123=True)], nonempty=True),
    "gateways": [Name("gateway_ref")],
    "exportTo": [Name("export_to")],
    "http": [HTTP_ROUTE],
    "tcp": [TCP_ROUTE],
    "tls": [TLS_ROUTE],
}
# ServerTLSSettings (istio/api networking/v1alpha3/gateway.proto): every mode is accepted here so that
# gateway_tls.py refuses the ones the local backend cannot do by name; the file-path fields
# (serverCertificate, privateKey, caCertificates: files in the gateway pod) and httpsRedirect are not
# accepted at all.
TLS_VERSION = Choice(("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"))
SERVER_TLS = {
    "mode": Choice(("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL")),
    "credentialName": Name("subdomain"),
    "subjectAltNames": [str],
    "minProtocolVersion": TLS_VERSION,
    "maxProtocolVersion": TLS_VERSION,
    "cipherSuites": [Name("cipher_suite")],
}
GATEWAY = {
    "selector": Required(LABELS, nonempty=True),
    "servers": Required(
        [
            {
                "port": Required(
                    {
                        "number": Required(PORT),
                        "name": str,
                        "protocol": Required(Choice(("HTTP", "HTTP2", "HTTPS", "TCP", "TLS"), ignore_case=True)),
                    }
                ),
                "hosts": Required([Host(namespaced=True, dns1123=True)], nonempty=True),
                "name": str,
                "tls": SERVER_TLS,
            }
        ],
        nonempty=True,
    ),
}
COUNT = Range(0, 2**31 - 1)
POLICY_PARTS = {
    "loadBalancer": {
        "simple": Choice(("ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM")),
        "consistentHash": {
            "httpHeaderName": Name("header"),
            "httpCookie": {"name": Required(Name("header")), "path": str, "ttl": Duration(allow_zero=True)},
            "useSourceIp": bool,
            "httpQueryParameterName": str,
            "minimumRingSize": Range(0, 2**23),
        },
    },
    "connectionPool": {
        "tcp": {"maxConnections": COUNT, "connectTimeout": Duration()},
        "http": {
            "http1MaxPendingRequests": COUNT,
            "http2MaxRequests": COUNT,
            "maxRequestsPerConnection": COUNT,
            "maxRetries": COUNT,
            "idleTimeout": Duration(),
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": COUNT,
        "consecutiveErrors": COUNT,
        "consecutiveGatewayErrors": COUNT,
        "interval": Duration(),
        "baseEjectionTime": Duration(),
        "maxEjectionPercent": Range(0, 100),
    },
}
# ClientTLSSettings (istio/api networking/v1alpha3/destination_rule.proto): the mesh's own certificates
# serve ISTIO_MUTUAL; SIMPLE and MUTUAL read files (origination.py), which refuses insecureSkipVerify
# where the release has none. Not accepted: credentialName (a sidecar honours it only under a
# workloadSelector, from 1.30) and caCrl (revocation lists are not checked).
CLIENT_TLS = {
    "mode": Choice(("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")),
    "sni": str,
    "subjectAltNames": [str],
    "caCertificates": str,
    "clientCertificate": str,
    "privateKey": str,
    "insecureSkipVerify": bool,
}
POLICY_PARTS["tls"] = CLIENT_TLS
TRAFFIC_POLICY = {**POLICY_PARTS, "portLevelSettings": [{"port": Required(PORT_SELECTOR), **POLICY_PARTS}]}
DESTINATION_RULE = {
    "host": Required(Host()),
    "trafficPolicy": TRAFFIC_POLICY,
    "subsets": [{"name": Required(Name("label")), "labels": LABELS, "trafficPolicy": TRAFFIC_POLICY}],
    "exportTo": [Name("export_to")],
}
SERVICE_ENTRY = {
    "hosts": Required([Host()], nonempty=True),
    "addresses": [Address()],
    "ports": [
        {
            "number": Required(PORT),
            "name": Required(str),
            # HTTPS, TLS and TCP ports are a route's destination only (upstreams.py RegistryHost.opaque).
            "protocol": ISTIO_PROTOCOL,
            "targetPort": PORT,
        }
    ],
    "location": Choice(("MESH_EXTERNAL", "MESH_INTERNAL")),
    "resolution": Choice(("STATIC", "DNS")),
    "endpoints": [{"address": Required(str), "ports": MapOf(PORT), "labels": LABELS}],
    "exportTo": [Name("export_to")],
    # The names its servers' certificates carry, checked by origination and ISTIO_MUTUAL (upstreams.py).
    "subjectAltNames": [str],
}

ISTIO_VERSIONS = ("networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1")
SECURITY_VERSIONS = ("security.istio.io/v1beta1", "security.istio.io/v1")
MTLS_MODE = {"mode": Choice(("UNSET", "DISABLE", "PERMISSIVE", "STRICT"))}
# security.istio.io PeerAuthentication (istio/api security/v1beta1/peer_authentication.proto).
PEER_AUTHENTICATION = {
    "selector": {"matchLabels": Required(LABELS, nonempty=True)},
    "mtls": MTLS_MODE,
    "portLevelMtls": MapOf(MTLS_MODE, key=Name("port_number")),
}
# security.istio.io AuthorizationPolicy (istio/api security/v1beta1/authorization_policy.proto): the
# common keys; AUDIT and CUSTOM are accepted here so that build.py refuses them by name.
AUTHORIZATION_POLICY = {
    "selector": {"matchLabels": Required(LABELS, nonempty=True)},
    "action": Choice(("ALLOW", "DENY", "AUDIT", "CUSTOM")),
    "rules": [
        {
            "from": [
                {
                    "source": Required(
                        {
                            "principals": [str],
                            "notPrincipals": [str],
                            "namespaces": [str],
                            "notNamespaces": [str],
                            "requestPrincipals": [str],
                            "notRequestPrincipals": [str],
                        }
                    )
                }
            ],
            "to": [{"operation": Required({"paths": [str], "notPaths": [str], "methods": [str], "notMethods": [str]})}],
            "when": [{"key": Required(str), "values": [str], "notValues": [str]}],
        }
    ],
}
# v1 Secret (its fields sit beside metadata, not under spec): what Istio's gateways read as credentials.
SECRET = {
    "type": Choice(("kubernetes.io/tls", "Opaque")),
    "data": MapOf(str, key=Name("secret_key")),
    "stringData": MapOf(Text(2**20, multiline=True), key=Name("secret_key")),
}
# Kinds whose fields are top-level (as the API server has them), kept as the resource's spec locally.
TOP_LEVEL_FIELDS = {"Secret": tuple(SECRET)}
# security.istio.io RequestAuthentication (istio/api security/v1beta1/request_authentication.proto, jwt.proto).
# jwksUri is not accepted: istiod fetches it for a cluster, the local mesh fetches nothing (keys go in jwks).
REQUEST_AUTHENTICATION = {
    "selector": {"matchLabels": Required(LABELS, nonempty=True)},
    "jwtRules": [
        {
            "issuer": Required(str),
            "audiences": [str],
            "jwks": Text(2**20, multiline=True),
            "fromHeaders": [{"name": Required(Name("header")), "prefix": str}],
            "fromParams": [str],
            "forwardOriginalToken": bool,
            "outputPayloadToHeader": Name("header"),
        }
    ],
}
KINDS: dict[str, tuple[tuple[str, ...], Any]] = {
    "Namespace": (("v1",), None),
    "Secret": (("v1",), SECRET),
    "Deployment": (("apps/v1",), DEPLOYMENT),
    "Service": (("v1",), SERVICE),
    "Gateway": (ISTIO_VERSIONS, GATEWAY),
    "VirtualService": (ISTIO_VERSIONS, VIRTUAL_SERVICE),
    "DestinationRule": (ISTIO_VERSIONS, DESTINATION_RULE),
    "ServiceEntry": (ISTIO_VERSIONS, SERVICE_ENTRY),
    "PeerAuthentication": (SECURITY_VERSIONS, PEER_AUTHENTICATION),
    "AuthorizationPolicy": (SECURITY_VERSIONS, AUTHORIZATION_POLICY),
    "RequestAuthentication": (SECURITY_VERSIONS, REQUEST_AUTHENTICATION),
}
# Object names: Services are DNS-1035 labels, Namespaces DNS-1123 labels, the rest DNS-1123 subdomains.
NAME_SYNTAX = {"Service": "label1035", "Namespace": "label"}


# Fields the local backend accepts but cannot honour, by field name or by path
# (list indexes dropped); `local.apply` names each one it meets.
NO_LOCAL_EFFECT = {
    "exportTo": "every workload sees every resource",
    "resources": "processes are not resource-limited",
    "imagePullPolicy": "nothing is pulled",
    "livenessProbe": "restarts follow process exits instead",
    "annotations": "no controller reads them locally",
    "consecutiveErrors": "Istio's translation never reads it; Envoy's default of 5 consecutive 5xx applies",
    "spec.addresses": "the local registry routes by host name; there is no address capture",
    "spec.location": "ServiceEntry endpoints run no sidecar locally, so auto mTLS never reaches them either way",
    "spec.http.match.name": "names only appear in access logs and stats Istio generates",
}


# Fields that are accepted and do nothing locally - as in a cluster, or because only
# one value is allowed - and so are not worth a note on every apply.
INERT = {
    "Deployment spec.template.spec.containers.name": "a container's name only labels it",
    "Deployment spec.template.spec.containers.ports.name": "a port's name only labels it",
    "protocol": "TCP (Kubernetes) or HTTP/HTTP2 (Istio) are served alike by HTTP/1.1 locally "
    "(a ServiceEntry port of HTTPS, TLS or TCP is a route's destination only, upstreams.py)",
    "Deployment spec.template.spec.containers.readinessProbe.httpGet.scheme": "HTTP is the only scheme accepted",
    "type": "ClusterIP is the only Service type accepted",
    "Service spec.ports.name": "a Service port's name only labels it locally (no protocol sniffing)",
    "Gateway spec.servers.port.name": "a server port's name only labels it",
    "Gateway spec.servers.name": "a server's name only labels it",
    "VirtualService spec.http.name": "a route's name only labels it (and its Envoy route)",
    "Deployment spec.template.spec.containers.readinessProbe.httpGet.port": "readiness is polled on every container port",
    "ServiceEntry spec.resolution": "derived from endpoints locally (STATIC with them, DNS without); others are refused",
    "initialDelaySeconds": "readiness is polled, its timings are not followed",
    "periodSeconds": "readiness is polled, its timings are not followed",
    "timeoutSeconds": "readiness is polled, its timings are not followed",
    "failureThreshold": "readiness is polled, its timings are not followed",
    "successThreshold": "readiness is polled, its timings are not followed",
}


# Pod template annotations the local backend honours: Secrets mounted into the sidecar (origination.py).
HONOURED_ANNOTATIONS = ("sidecar.istio.io/userVolume", "sidecar.istio.io/userVolumeMount")


def without_effect(value: Any, path: str = "spec") -> list[str]:
    """Paths of NO_LOCAL_EFFECT fields present in value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            reason = NO_LOCAL_EFFECT.get(key) or NO_LOCAL_EFFECT.get(re.sub(r"\[\d+\]", "", here))
            if key == "annotations" and isinstance(item, dict):
                # The sidecar's Secret mounts are read (origination.py); only other annotations are named.
                item = {name: text for name, text in item.items() if name not in HONOURED_ANNOTATIONS}
                reason = reason if item else None
                here += "" if len(item) == len(value[key]) else f" (other than {', '.join(HONOURED_ANNOTATIONS)})"
            if reason:
                found.append(f"{here} has no local effect ({reason})")
            else:
                found += without_effect(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += without_effect(item, f"{path}[{index}]")
    return found
