"""Settings read from the environment, validated once at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    port: int = 9090
    address: str = "127.0.0.1"
    delay_max: float = 0.0
    discard_quota: float = 0.0
    reject: bool = False
    tracing: bool = False
    jaeger_url: str = "http://localhost:14268/api/traces"
    debug: bool = False
    log_requests: bool = True
    hostname: str = "localhost"
    reuse_port: bool = False
    # A second listener that serves the same app over TLS (an external HTTPS service); 0: none.
    tls_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set: the TLS listener asks for a client certificate this CA signed

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            port=_int(env, "SERVICE_PORT", 9090, 0, 65535),
            # Loopback by default; the container image sets 0.0.0.0.
            address=env.get("SERVICE_ADDRESS", "127.0.0.1"),
            delay_max=_float(env, "DELAY_MAX", 0.0, 0.0, 3600.0),
            discard_quota=_float(env, "DISCARD_QUOTA", 0.0, 0.0, 100.0),
            reject=_flag(env, "REJECT"),
            tracing=_flag(env, "TRACING"),
            jaeger_url=env.get("JAEGER_URL", "http://localhost:14268/api/traces"),
            debug=_flag(env, "DEBUG"),
            log_requests=_flag(env, "LOG_REQUESTS", default=True),
            hostname=env.get("HOSTNAME") or socket.gethostname(),
            # A successor can bind the port while this process still serves (handover without a gap).
            reuse_port=_flag(env, "SERVICE_REUSE_PORT"),
            **_tls(env),
        )


def _tls(env: Mapping[str, str]) -> dict[str, object]:
    port = _int(env, "TLS_PORT", 0, 0, 65535)
    if not port:
        return {}
    names = ("TLS_CERT_FILE", "TLS_KEY_FILE") + (("TLS_CLIENT_CA_FILE",) if env.get("TLS_CLIENT_CA_FILE") else ())
    files = {name: env.get(name, "").strip() for name in names}
    for name, path in files.items():
        if not path or not os.path.isfile(path):
            raise ConfigError(f"TLS_PORT is set but {name}={path!r} names no file: point it at a PEM file.")
    return {
        "tls_port": port,
        "tls_cert": files["TLS_CERT_FILE"],
        "tls_key": files["TLS_KEY_FILE"],
        "tls_client_ca": files.get("TLS_CLIENT_CA_FILE", ""),
    }


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number: set it to a value between {low:g} and {high:g}.") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range: set it to a value between {low:g} and {high:g}.")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _float(env, name, default, low, high)
    if value != int(value):
        raise ConfigError(f"{name}={env[name]!r} is not a whole number: set it to an integer between {low} and {high}.")
    return int(value)


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a flag: set it to 1 or 0.")
