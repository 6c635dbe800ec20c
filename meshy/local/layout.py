"""Where a local mesh listens: its ingress, its dashboard and its block of loopback addresses.

Apart from topology (which builds pods from manifests) so that reading a
mesh's configuration does not import the translation layers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """Where things listen: the ingress address and a block of loopback addresses.

    With base b: pods' sidecars on 127.b.x.y, their apps on 127.(b+1).x.y,
    gateways on 127.(b+2).0.n and the external service on 127.(b+3).0.1.
    """

    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    base: int = 10
    # The dashboard and the mesh's metrics endpoint (Kiali's port by default).
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 20001
    # Where the ingress gateway's port 443 listens when set (kind's host-port mapping, as the stand-ins
    # publish it); else on the gateway's own address, port 8443, like every other gateway port.
    ingress_tls_port: int | None = None
    ingress_tcp_port: int | None = None  # the same for the ingress gateway's TCP port 31400

    def pod_ip(self, index: int) -> str:
        return f"127.{self.base}.{index // 250}.{index % 250 + 1}"

    def app_ip(self, index: int) -> str:
        return f"127.{self.base + 1}.{index // 250}.{index % 250 + 1}"

    def gateway_ip(self, index: int) -> str:
        return f"127.{self.base + 2}.0.{index + 1}"

    @property
    def external_ip(self) -> str:
        return f"127.{self.base + 3}.0.1"

    @property
    def ingress_url(self) -> str:
        return f"http://{self.ingress_host}:{self.ingress_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.dashboard_host}:{self.dashboard_port}"
