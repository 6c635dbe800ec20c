"""VirtualService tcp routes on a gateway's TCP server (meshy/local/tcp_routes.py cites Istio), Istio's TCP metrics
from the gateway's connection log, and the tcp-traffic-shifting verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from meshy.console import Console
from meshy.local import topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.resources import ResourceError, ResourceSet, parse_documents
from meshy.local.telemetry.accesslog import parse_line
from meshy.local.telemetry.metrics import IstioMetrics, label_key, labels_of
from meshy.local.telemetry.peers import Peers
from meshy.metrics import istio
from meshy.metrics.prometheus import parse
from meshy.render import RenderOptions
from meshy.scenarios import tcp_traffic_shifting
from meshy.versions import select_pair
from tests.local_mesh import running

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: minimal-service}
  ports: [{name: tcp, port: 9000, targetPort: 9090}]
"""
OTHER = SERVICE.replace("name: echo", "name: other")


def gateway(protocol: str = "TCP", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        f'    - {{port: {{number: 31400, name: p, protocol: {protocol}}}, hosts: ["*"]}}\n{extra}'
    )


def route(name: str, host: str, match: str = "", gateways: str = "[gw]", hosts: str = "*") -> str:
    return (
        f"apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n"
        f'spec:\n  hosts: ["{hosts}"]\n  gateways: {gateways}\n  tcp:\n'
        f"    - {match}route: [{{destination: {{host: {host}}}}}]\n"
    )


def tcp_clusters(*texts: str) -> tuple[str, ...]:
    resources = ResourceSet().applied(r for text in texts for r in parse_documents(text, "test"))
    proxy = build_mesh(Inputs(resources, [], topology.gateways(topology.Layout()), {})).proxies["istio-ingressgateway"]
    return tuple(c.cluster for listener in proxy.listeners for c in listener.tcp)


def test_the_oldest_virtual_service_with_a_matching_entry_wins():
    first = route("a", "echo", match="match: [{port: 9999}]\n      ")
    assert tcp_clusters(SERVICE, OTHER, gateway(), first, route("b", "other"), route("c", "echo")) == (
        "outbound|9000||other.default.svc.cluster.local",
    )


def test_no_entry_that_applies_means_no_listener():
    assert tcp_clusters(SERVICE, gateway(), route("a", "echo", match="match: [{port: 9999}]\n      ")) == ()


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ((SERVICE, route("a", "echo", gateways="[mesh]", hosts="echo")), "tcp routes work at gateways only"),
        ((SERVICE, gateway(extra='    - {port: {number: 31400, name: h, protocol: HTTP}, hosts: ["*"]}\n')),
         "has TCP and HTTP servers"),
    ],
)  # fmt: skip
def test_what_tcp_routes_cannot_do_locally_is_refused_in_one_line(texts, message):
    with pytest.raises(ResourceError, match=message) as caught:
        tcp_clusters(*texts)
    assert "\n" not in str(caught.value)


def test_a_connection_log_line_counts_as_istios_tcp_metrics():
    line = (
        '{"listener": "gateway_31400", "transport": "tcp", "code": "0", "flags": "-", "protocol": "-", '
        '"request_bytes": "40", "response_bytes": "300", "duration_us": "900", '
        '"upstream_cluster": "outbound|9000|v2|echo.default.svc.cluster.local", "upstream_host": "-", '
        '"downstream_remote": "127.0.0.1:5000"}'
    )
    entry = parse_line("istio-ingressgateway", line)
    assert entry is not None and entry.tcp
    metrics = IstioMetrics()
    metrics.record(label_key(labels_of(entry, Peers())), entry)
    samples = parse(metrics.exposition())
    opened = [s for s in samples if s.name == istio.TCP_OPENED]
    assert [s.value for s in opened] == [1]
    assert opened[0].labels["request_protocol"] == "tcp" and "response_code" not in opened[0].labels
    assert [s.value for s in samples if s.name == "istio_tcp_received_bytes_total"] == [40]
    assert not [s for s in samples if s.name == istio.REQUESTS]  # a connection is not a request


def test_connections_through_a_tcp_route_reach_the_app_and_are_counted(tmp_path):
    with running(tmp_path / "state") as mesh:
        mesh.apply(SERVICE + "---\n" + gateway() + "---\n" + route("a", "echo"))
        layout = mesh.backend.layout
        from meshy.scenarios import tcp_client

        pods = tcp_client.connections(layout.gateway_ip(0), topology.TCP_PORT, "echo", 20)
        assert all(pod.startswith("minimal-service-") for pod in pods), pods
        samples = parse(mesh.metrics())
        opened = istio.requests_by(samples, "echo", ("reporter",), metric=istio.TCP_OPENED)
        assert opened == {("source",): 20}


@dataclass
class ScriptedSplit:
    """A gateway splitting connections exactly by the applied weights, or broken on request."""

    broken: str = ""
    name: str = "local"
    pair: object = field(default_factory=select_pair)
    options: RenderOptions = field(default_factory=RenderOptions)
    split: dict = field(default_factory=dict)
    opened: dict = field(default_factory=lambda: {"v1": 0, "v2": 0})

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        if template == tcp_traffic_shifting.ROUTE:
            self.split = dict((options or self.options).split)

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        pass

    def poll(self, check, timeout: float) -> bool:
        return bool(check())

    def config_dump(self, proxy: str) -> dict:
        clusters = [
            {"name": f"outbound|9000|{subset}|minimal-tcp.default.svc.cluster.local", "weight": weight}
            for subset, weight in self.split.items()
            if weight
        ]
        return {
            "@type": "type.googleapis.com/" + tcp_traffic_shifting.TCP_PROXY,
            "weighted_clusters": {"clusters": clusters},
        }

    def tcp_connections(self, host: str, n: int) -> list[str]:
        weights = {"v1": 50, "v2": 50} if self.broken == "even split" else self.split
        if self.broken == "all to v1":
            weights = {"v1": 100, "v2": 0}
        pods = []
        for index in range(n):
            version = "v1" if (index % 100) < weights["v1"] else "v2"
            self.opened[version] += 1
            pods.append("minimal-service-abc-1" if version == "v1" else "minimal-service-v2-abc-1")
        return pods

    def istio_metrics(self, *workloads: str):
        return parse(
            "".join(
                f'istio_tcp_connections_opened_total{{reporter="source",source_workload="istio-ingressgateway",'
                f'destination_service_name="minimal-tcp",destination_version="{v}"}} {n}\n'
                for v, n in self.opened.items()
            )
        )


def test_a_gateway_splitting_by_weight_passes():
    report = tcp_traffic_shifting.run(ScriptedSplit(), Console(quiet=True))
    assert report.passed, [c for c in report.checks if not c.passed]


@pytest.mark.parametrize("broken", ["all to v1", "even split"])
def test_a_broken_split_fails_the_verdict(broken):
    assert not tcp_traffic_shifting.run(ScriptedSplit(broken), Console(quiet=True)).passed


ENTRY = """apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.org]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.9}]
"""


def test_a_service_entry_tcp_port_is_a_tcp_route_destination_and_no_http_route():
    assert tcp_clusters(ENTRY, gateway(), route("db", "db.example.org")) == ("outbound|5432||db.example.org",)
    app = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app, namespace: default}\nspec:\n"
        "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n"
        "      containers: [{name: a, image: localhost:5000/minimal-service:v1.0.0, ports: [{containerPort: 9090}]}]\n"
    )
    http_entry = ENTRY.replace("name: db,", "name: web,").replace("db.example.org", "web.example.org")
    http_entry = http_entry.replace("protocol: TCP", "protocol: HTTP")
    texts = (ENTRY, http_entry, app)
    resources = ResourceSet().applied(r for text in texts for r in parse_documents(text, "test"))
    pods, _ = topology.pods(resources, {}, topology.Layout())
    mesh = build_mesh(Inputs(resources, pods, topology.gateways(topology.Layout()), {}))
    domains = [
        d
        for proxy in mesh.proxies.values()
        for item in proxy.listeners
        for vh in item.virtual_hosts
        for d in vh.domains
    ]
    assert "web.example.org:5432" in domains  # the same port as HTTP gets the sidecar's route
    assert "db.example.org:5432" not in domains
