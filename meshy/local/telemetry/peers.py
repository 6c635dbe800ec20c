"""Who is who in the local mesh, as Istio's peer metadata would say it.

On a cluster, Istio's metadata exchange tells each proxy the workload at the
other end. Locally every proxy binds its upstream connections to its own
address, so an address names a workload; the service registry the
translation builds names the services.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshy.local.build import RegistryHost, service_registry
from meshy.local.model import GatewayPod, Pod
from meshy.local.resources import ResourceSet

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Workload:
    """The workload labels of one side of a request (Istio's source_* / destination_* labels)."""

    name: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    cluster: str = UNKNOWN

    def labels(self, side: str) -> dict[str, str]:
        return {
            f"{side}_workload": self.name,
            f"{side}_workload_namespace": self.namespace,
            # A workload has no principal of its own: the connection's certificate gives it (metrics.labels_of).
            f"{side}_principal": UNKNOWN,
            f"{side}_app": self.app,
            f"{side}_version": self.version,
            f"{side}_canonical_service": self.canonical_service,
            f"{side}_canonical_revision": self.canonical_revision,
            f"{side}_cluster": self.cluster,
        }


@dataclass(frozen=True)
class Service:
    host: str = UNKNOWN
    name: str = UNKNOWN
    namespace: str = UNKNOWN

    def labels(self) -> dict[str, str]:
        return {
            "destination_service": self.host,
            "destination_service_name": self.name,
            "destination_service_namespace": self.namespace,
        }


# Istio's cluster id when none is configured (values.global.multiCluster.clusterName).
CLUSTER_ID = "Kubernetes"


def workload_of(name: str, namespace: str, labels: dict[str, str]) -> Workload:
    # Istio's canonical service/revision fall back to the app and version labels.
    app = labels.get("app", UNKNOWN)
    version = labels.get("version", UNKNOWN)
    return Workload(
        name,
        namespace,
        app,
        version,
        labels.get("service.istio.io/canonical-name", labels.get("app", name)),
        labels.get("service.istio.io/canonical-revision", labels.get("version", "latest")),
        CLUSTER_ID,
    )


@dataclass
class Peers:
    """Workloads by proxy name and by address, services by host."""

    by_proxy: dict[str, Workload] = field(default_factory=dict)
    by_ip: dict[str, Workload] = field(default_factory=dict)
    pod_ip: dict[str, str] = field(default_factory=dict)  # proxy name -> its address
    registry: dict[str, RegistryHost] = field(default_factory=dict)

    @classmethod
    def build(cls, resources: ResourceSet, pods: list[Pod], gateways: list[GatewayPod], hosts: dict[str, str]) -> Peers:
        peers = cls(registry=service_registry(resources, pods, gateways, hosts))
        for pod in pods:
            peers.add(pod.name, pod.ip, workload_of(pod.deployment, pod.namespace, pod.labels))
        for gateway in gateways:
            peers.add(gateway.name, gateway.ip, workload_of(gateway.name, gateway.namespace, gateway.labels))
        return peers

    def add(self, proxy: str, ip: str, workload: Workload) -> None:
        self.by_proxy[proxy] = workload
        self.by_ip[ip] = workload
        self.pod_ip[proxy] = ip

    def at(self, address: str) -> Workload:
        """The workload behind HOST:PORT; unknown for clients outside the mesh (curl, the external service)."""
        return self.by_ip.get(address.rpartition(":")[0], Workload())

    def service_of_cluster(self, cluster: str) -> Service:
        """outbound|PORT|SUBSET|HOST -> the destination service."""
        parts = cluster.split("|")
        if len(parts) != 4 or parts[0] != "outbound":
            return Service()
        return self.service(parts[3])

    def service(self, host: str) -> Service:
        entry = self.registry.get(host)
        if entry is None:
            return Service(host, host, UNKNOWN)
        return Service(host, entry.short_name or host, entry.namespace)

    def service_at(self, proxy: str, port: int) -> Service:
        """The service whose endpoints include this proxy's port (inbound): the first by host if several do."""
        ip = self.pod_ip.get(proxy)
        for host in sorted(self.registry):
            for endpoints in self.registry[host].ports.values():
                if any(ep.address == ip and ep.port == port for ep, _ in endpoints):
                    return self.service(host)
        return Service()
