"""Resources the local backend refuses, each with a message naming resource and field."""

from __future__ import annotations

import pytest

from meshy.local import topology
from meshy.local.build import BuildError, Inputs, build_mesh
from meshy.local.release import DEFAULT_RELEASE, IstioRelease
from meshy.local.resources import ResourceError, ResourceSet, parse_documents

SERVICE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      containers: [{name: web, image: minimal-service:v1, ports: [{containerPort: 9090}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 9090}]
"""


def build(text: str, release: IstioRelease = DEFAULT_RELEASE):
    resources = ResourceSet().applied(parse_documents(SERVICE + "---\n" + text, "test.yaml", release))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    return build_mesh(Inputs(resources, pods, topology.gateways(layout), {}, release))


def vs(http: str, extra: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-vs}}
spec:
  hosts: [web]
{extra}
  http:
{http}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}", "kind 'Job' is not supported by the local backend"),
        (
            "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: g}",
            "Gateway g: apiVersion 'networking.istio.io/v2' is not served by Istio 1.30",
        ),
        (vs("    - route: [{destination: {host: web}}]\n      mirrorPercent: 5"), "field spec.http[0].mirrorPercent"),
        (
            vs("    - route: [{destination: {host: web}}]\n      rewrite: {uriRegexRewrite: {match: a, rewrite: b}}"),
            "field spec.http[0].rewrite.uriRegexRewrite is not supported locally",
        ),
        (
            vs("    - route: [{destination: {host: web}}]\n      timeout: soon"),
            "spec.http[0].timeout must be a duration",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort}",
            "spec.type must be one of ClusterIP",
        ),
        ("apiVersion: v1\nkind: Service\nmetadata: {labels: {a: b}}", "metadata.name is required"),
        ("key: [unclosed", "is not valid YAML"),
    ],
)
def test_schema_refusals(text, message):
    with pytest.raises(ResourceError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_documents(text, "bad.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            vs("    - route: [{destination: {host: web, subset: v9}}]"),
            "subset 'v9' of web is defined by no DestinationRule",
        ),
        (
            vs("    - route: [{destination: {host: web}}]", "  gateways: [nowhere]"),
            "gateway default/nowhere does not exist",
        ),
        (
            vs("    - route: [{destination: {host: web}}]\n      retries: {attempts: 2, retryOn: sometimes}"),
            "retryOn sometimes is not an Envoy retry condition",
        ),
        (vs("    - redirect: {uri: /x, redirectCode: 399}"), "redirectCode 399"),
        (
            vs("    - route: [{destination: {host: web}}]\n      redirect: {uri: /x}"),
            "exactly one of route, redirect or directResponse",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db}\nspec:\n  selector: {matchLabels: {app: db}}\n"
            "  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres:16}]}",
            "image 'postgres:16' cannot run locally",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
            "spec: {hosts: [a.example], ports: [{number: 80, name: http}], resolution: STATIC}",
            "resolution STATIC needs spec.endpoints",
        ),
    ],
)
def test_consistency_refusals(text, message):
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(text)


def test_two_mesh_virtual_services_for_one_host_are_refused():
    second = vs("    - route: [{destination: {host: web}}]").replace("name: web-vs", "name: web-vs-2")
    with pytest.raises(BuildError, match="VirtualService default/web-vs already routes web.default.svc.cluster.local"):
        build(vs("    - route: [{destination: {host: web}}]") + "---\n" + second)


def test_all_problems_of_a_file_are_reported_together():
    text = (
        vs("    - route: [{destination: {host: web}}]\n      bogus: 1")
        + "---\n"
        + "apiVersion: v1\nkind: Pod\nmetadata: {name: p}"
    )
    with pytest.raises(ResourceError) as caught:
        parse_documents(text, "two.yaml")
    message = str(caught.value)
    assert "two.yaml document 1: VirtualService web-vs: field spec.http[0].bogus" in message
    assert message.endswith("(and 1 more)") and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_every_istio_api_version_of_the_matrix_is_accepted(version):
    text = vs("    - route: [{destination: {host: web}}]").replace(
        "networking.istio.io/v1", f"networking.istio.io/{version}"
    )
    proxy = next(p for name, p in build(text).proxies.items() if name.startswith("web-"))
    outbound = next(listener for listener in proxy.listeners if listener.name == "outbound")
    routes = {route.name for vh in outbound.virtual_hosts for route in vh.routes}
    assert "web-vs.0.0" in routes


def test_fields_without_local_effect_are_named():
    from meshy.local.shapes import without_effect

    resource = parse_documents(vs("    - route: [{destination: {host: web}}]", "  exportTo: ['.']"), "x")[0]
    assert without_effect(resource.spec) == ["spec.exportTo has no local effect (every workload sees every resource)"]
    deployment = parse_documents(SERVICE, "x")[0]
    assert without_effect(deployment.spec) == []


def test_gateway_merges_virtual_services_for_one_host():
    gateway = (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*.example.org']}]\n"
    )
    first = vs(
        "    - match: [{uri: {prefix: /a}}]\n      route: [{destination: {host: web}}]", "  gateways: [gw]"
    ).replace("hosts: [web]", "hosts: [site.example.org]")
    second = first.replace("name: web-vs", "name: web-vs-b").replace("/a", "/b")
    mesh = build(gateway + "---\n" + first + "---\n" + second)
    listener = mesh.proxies["istio-ingressgateway"].listeners[0]
    (host,) = listener.virtual_hosts
    assert host.domains == ("site.example.org",)
    assert [route.match.uri.value for route in host.routes] == ["/a", "/b"]


SE = (
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
    "spec: {hosts: [a.example.org], ports: [PORTS], resolution: STATIC, endpoints: [ENDPOINT]}"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\nspec: {ports: [{port: 80}]}",
            "Service shop/s: namespace shop does not exist; apply a Namespace named shop first",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81}]}",
            "spec.ports needs a name for each port when there are several",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, name: a}, {port: 80, name: b}]}",
            "spec.ports lists a port number twice",
        ),
        (
            SE.replace("PORTS", "{number: 80, name: http}").replace("ENDPOINT", "{address: api.example.org}"),
            "spec.endpoints[0].address must be an IP address locally",
        ),
        (
            SE.replace("PORTS", "{number: 80, name: http}").replace(
                "ENDPOINT", "{address: 127.0.0.9, ports: {web: 81}}"
            ),
            "spec.endpoints[0].ports names web, which spec.ports does not define",
        ),
    ],
)
def test_cross_field_refusals(text, message):
    with pytest.raises(BuildError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(text)


def test_a_namespace_applied_first_makes_its_resources_welcome():
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\nspec: {ports: [{port: 80}]}"
    assert build(namespace + service).proxies


def test_istio_protocols_are_read_in_any_case():
    entry = SE.replace("PORTS", "{number: 80, name: http, protocol: http}").replace("ENDPOINT", "{address: 127.0.0.9}")
    assert build(entry).proxies


def test_a_deployments_selector_cannot_change_once_created():
    first = ResourceSet().applied(parse_documents(SERVICE, "x"))
    changed = SERVICE.replace("selector: {matchLabels: {app: web}}", "selector: {matchLabels: {app: web, version: v1}}")
    with pytest.raises(ResourceError, match="Deployment default/web: spec.selector cannot change once created"):
        first.applied(parse_documents(changed, "x"))
    assert first.applied(parse_documents(SERVICE.replace("version: v1", "version: v1, tier: a"), "x"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  gateways: ['two words']", "spec.gateways[0] must be mesh or a Gateway's [namespace/]name"),
        ("  exportTo: ['a b']", "spec.exportTo[0] must be '.', '*' or a namespace name"),
    ],
)
def test_references_are_checked_as_istio_names(extra, message):
    with pytest.raises(ResourceError, match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        parse_documents(vs("    - route: [{destination: {host: web}}]", extra), "x")


def test_service_entry_addresses_are_ip_addresses_or_blocks():
    entry = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
        "spec: {hosts: [a.example.org], addresses: [ADDRESS], ports: [{number: 80, name: http}]}"
    )
    with pytest.raises(ResourceError, match=r"spec\.addresses\[0\] must be an IP address or CIDR block"):
        parse_documents(entry.replace("ADDRESS", "somewhere"), "x")
    assert parse_documents(entry.replace("ADDRESS", "240.0.0.0/24"), "x")
