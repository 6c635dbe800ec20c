"""Render the jinja2 manifest templates for a version pair.

The output keeps the walkthrough's file names (istio/services-gateway.yaml,
...) so that a reader can apply them by hand; both backends read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from meshy import ROOT
from meshy.versions import Pair

TEMPLATES = ROOT / "manifests" / "templates"
IMAGE = "localhost:5000/minimal-service:v1.0.0"


@dataclass(frozen=True)
class External:
    host: str = "minimal.external.kind.org"
    port: int = 9090
    tls_port: int = 9443  # the same service over TLS (tls-origination)
    # None: resolved by DNS (the local backend's host table); on kind, the
    # external container's address, so that pods need no /etc/hosts entry.
    address: str | None = None


@dataclass(frozen=True)
class ExternalTls:
    """The tls-origination scenario's trust: the Secret of CAs mounted into minimal-service's sidecar."""

    secret: str = "external-ca"
    volume: str = "external-ca"
    mount: str = "/etc/meshy/external-ca"
    ca: str = ""  # base64: the CA that signed the external service's certificate
    other_ca: str = ""  # base64: a CA that signed nothing here
    trust: str = "ca.crt"  # the key the DestinationRule's caCertificates names


@dataclass(frozen=True)
class IngressTls:
    """The secure-ingress scenario's server TLS: the mode and the Secret's base64 values (made at run time)."""

    mode: str = "SIMPLE"
    cert: str = ""
    key: str = ""
    ca: str = ""  # MUTUAL: the CA client certificates must chain to


@dataclass(frozen=True)
class Jwt:
    """The request-authentication scenario's issuer and its JWKS (a key made at run time)."""

    issuer: str = "https://issuer.meshy.example"
    jwks: str = '{"keys": []}'


@dataclass(frozen=True)
class Ports:
    """Host and node ports of the kind path (see the walkthrough's port mappings)."""

    registry: int = 5000
    ingress_host: int = 8080
    ingress_node: int = 30080
    ingress_https_host: int = 8443
    ingress_https_node: int = 30443
    # The ingress gateway's TCP port 31400 (the demo profile's "tcp" port), published as itself.
    tcp_host: int = 31400
    tcp_node: int = 31400
    kiali_host: int = 8081
    kiali_node: int = 30200
    grafana_host: int = 3000
    grafana_node: int = 30300
    nginx_host: int = 8880

    @classmethod
    def from_env(cls, value: str | None) -> Ports:
        """Host ports moved by MESHY_HOST_PORTS, e.g. "ingress=18080,kiali=18081,grafana=13000,registry=15000"."""
        if not value:
            return cls()
        names = {"registry": "registry", "ingress": "ingress_host", "kiali": "kiali_host", "grafana": "grafana_host"}
        names["nginx"] = "nginx_host"
        names["ingress-https"] = "ingress_https_host"
        names["tcp"] = "tcp_host"
        moved = {}
        for item in value.split(","):
            name, _, port = item.strip().partition("=")
            if name not in names or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"MESHY_HOST_PORTS item {item.strip()!r} is not NAME=PORT with NAME one of {', '.join(names)}; "
                    "fix or unset MESHY_HOST_PORTS."
                )
            moved[names[name]] = int(port)
        return dataclasses.replace(cls(), **moved)


@dataclass(frozen=True)
class RenderOptions:
    namespace: str = "default"
    image: str = IMAGE
    service_port: int = 9090
    retry_attempts: int = 20
    split: dict[str, int] = field(default_factory=lambda: {"v1": 50, "v2": 50})
    external: External = External()
    ports: Ports = Ports()
    registry_name: str = "kind-registry"
    mtls_mode: str = "STRICT"  # the PeerAuthentication of the mtls scenario
    ingress_tls: IngressTls = IngressTls()
    jwt: Jwt = Jwt()
    external_tls: ExternalTls = ExternalTls()

    @classmethod
    def for_kind(cls, ports: Ports) -> RenderOptions:
        """The cluster path's options: the image is pushed to the registry's host port."""
        return cls(ports=ports, image=f"localhost:{ports.registry}/minimal-service:v1.0.0")


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


def template_names(env: jinja2.Environment | None = None) -> list[str]:
    """Every renderable template (partials start with an underscore)."""
    env = env or environment()
    return sorted(name for name in env.list_templates(extensions=["j2"]) if not Path(name).name.startswith("_"))


def output_name(template: str) -> str:
    return template.removesuffix(".j2")


def render(template: str, pair: Pair, options: RenderOptions | None = None, **extra: Any) -> str:
    options = options or RenderOptions()
    context = {
        "pair": pair,
        "namespace": options.namespace,
        "image": options.image,
        "service_port": options.service_port,
        "retry_attempts": options.retry_attempts,
        "split": options.split,
        "external": options.external,
        "ports": options.ports,
        "registry_name": options.registry_name,
        "mtls_mode": options.mtls_mode,
        "ingress_tls": options.ingress_tls,
        "jwt": options.jwt,
        "external_tls": options.external_tls,
        **extra,
    }
    return environment().get_template(template).render(context)


def render_all(pair: Pair, out_dir: Path, options: RenderOptions | None = None, **extra: Any) -> list[Path]:
    """Render every template into out_dir (written beside, then renamed into place)."""
    written = []
    for template in template_names():
        target = out_dir / output_name(template)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(render(template, pair, options, **extra))
        tmp.replace(target)
        written.append(target)
    return written


def build_dir(pair: Pair) -> Path:
    return ROOT / "build" / pair.name
