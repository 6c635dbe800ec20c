"""Hostile manifests beyond tests/test_local_hostile.py: huge numbers, unicode and wildcard hosts, conflicting
and dangling resources, 1 MiB strings, deep maps. Each is refused in one line (pure, then through
`inv local.apply` on a running mesh: exit 1, one line, the mesh's resources unchanged), or, where Istio
and Envoy take it, accepted.
"""

from __future__ import annotations

import pytest

from tests.test_local_hostile import assert_one_line, deadline, deployment, feed, route
from tests.test_local_refusals import SERVICE

MiB = 2**20
WORKLOAD = SERVICE + "---\n"


def rule(spec: str, name: str = "dr") -> str:
    return f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: web\n{spec}"


def gateway(hosts: str, name: str = "gw") -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n"
        "  selector: {istio: ingressgateway}\n"
        f"  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: {hosts}}}]\n"
    )


def nested(depth: int) -> str:
    value = "x"
    for level in range(depth):
        value = f"{{k{level}: {value}}}"
    return value


REFUSED = [
    # huge and odd numbers
    ("replicas .inf", deployment(replicas=".inf"), "spec.replicas must be an integer"),
    ("replicas .nan", deployment(replicas=".nan"), "spec.replicas must be an integer"),
    ("containerPort 2**64", deployment(port=str(2**64)), "containerPort must be an integer from 1 to 65535"),
    ("weight 10**30", route("", weight=str(10**30)), "weight must be an integer from 0 to 2147483647"),
    (
        "fault percentage .nan",
        route("      fault: {abort: {httpStatus: 503, percentage: {value: .nan}}}\n"),
        "0 to 100",
    ),
    ("timeout past protobuf's range", route("      timeout: 99999999999h\n"), "timeout must be at most"),
    (
        "ring size 2**70",
        WORKLOAD
        + rule(
            f"  trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true, minimumRingSize: {2**70}}}}}}}\n"
        ),
        "minimumRingSize must be an integer",
    ),
    (
        "maxEjectionPercent .inf",
        WORKLOAD + rule("  trafficPolicy: {outlierDetection: {maxEjectionPercent: .inf}}\n"),
        "0 to 100",
    ),
    (
        "maxConnections 1.5",
        WORKLOAD + rule("  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1.5}}}\n"),
        "must be an integer",
    ),
    # unicode hosts: Istio takes DNS-1123 names only (punycode is the way to write them)
    ("IDN host", WORKLOAD + gateway("['bücher.example.org']"), "hosts[0] must be a host name"),
    (
        "right-to-left override in a host",
        WORKLOAD + gateway("['a\u202eb.example.org']"),
        "hosts[0] must be a host name",
    ),
    ("zero-width space in a host", WORKLOAD + gateway("['a\u200bb.example.org']"), "hosts[0] must be a host name"),
    ("full-width dot", WORKLOAD + gateway("['a\uff0eexample.org']"), "hosts[0] must be a host name"),
    ("Cyrillic look-alike", WORKLOAD + gateway("['\u0430pple.example.org']"), "hosts[0] must be a host name"),
    # wildcard abuse
    ("two wildcards", WORKLOAD + gateway("['*.*.example.org']"), "hosts[0] must be a host name"),
    ("glued wildcard", WORKLOAD + gateway("['*example.org']"), "hosts[0] must be a host name"),
    ("wildcard and a dot", WORKLOAD + gateway("['*.']"), "hosts[0] must be a host name"),
    ("partial wildcard after ns/", WORKLOAD + gateway("['*/a*.example.org']"), "hosts[0] must be a host name"),
    ("'*' for the mesh", route("").replace("['web']", "['*']"), "wildcard hosts are supported on gateways only"),
    (
        "'*' as a subset",
        WORKLOAD + route("").replace("{host: web}", "{host: web, subset: '*'}"),
        "subset must be a DNS-1123 label",
    ),
    ("covering hosts in one VirtualService", route("").replace("['web']", "['web', 'web']"), "overlap"),
    # conflicting resources
    (
        "two VirtualServices for one mesh host",
        route("") + "---\n" + route("").replace("name: vs", "name: vs2"),
        "merge them into one",
    ),
    (
        "two DestinationRules for one host",
        WORKLOAD
        + rule("  subsets: [{name: a, labels: {app: web}}]\n")
        + "---\n"
        + rule("  subsets: [{name: b, labels: {app: web}}]\n", "dr2"),
        "merge them into one",
    ),
    (
        "ServiceEntry taking a Service's host",
        WORKLOAD
        + "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\nspec:\n"
        + "  hosts: [web.default.svc.cluster.local]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
        "cannot take it over",
    ),
    (
        "selector not matching its template",
        deployment().replace("matchLabels: {app: web}", "matchLabels: {app: other}"),
        "must match the template's labels",
    ),
    # references to missing resources
    (
        "subset of no DestinationRule",
        route("").replace("{host: web}", "{host: web, subset: v9}"),
        "apply the DestinationRule first",
    ),
    ("missing Gateway", route("").replace("  http:", "  gateways: [nowhere]\n  http:"), "apply the Gateway first"),
    (
        "missing namespace",
        route("").replace("metadata: {name: vs}", "metadata: {name: vs, namespace: ghost}"),
        "apply a Namespace named ghost first",
    ),
    # 1 MiB strings
    (
        "1 MiB header value",
        route("      headers: {request: {set: {x-a: '" + "a" * MiB + "'}}}\n"),
        "at most 16384 bytes",
    ),
    ("1 MiB env value", deployment().replace('value: "1"', 'value: "' + "a" * MiB + '"'), "Linux caps one NAME=value"),
    (
        "1 MiB annotation",
        deployment().replace("metadata: {name: web}", "metadata: {name: web, annotations: {a: '" + "b" * MiB + "'}}"),
        "annotations must hold at most 262144 bytes",
    ),
    ("1 MiB name", deployment(name="a" * MiB), "metadata.name must be a DNS-1123 subdomain"),
    (
        "1 MiB label value",
        deployment().replace("labels: {app: web}", "labels: {app: web, x: '" + "b" * MiB + "'}"),
        "must be a label value",
    ),
    ("1 MiB regex", route("      match: [{uri: {regex: '" + "a" * MiB + "'}}]\n"), "RE2"),
    (
        "1 MiB direct response",
        route("").replace(
            "- route: [{destination: {host: web}, weight: 100}]",
            "- directResponse: {status: 200, body: {string: '" + "a" * (MiB + 1) + "'}}",
        ),
        "1048576 characters",
    ),
    # deep and wide header maps
    (
        "nested map as a header value",
        route("      headers: {request: {set: {x-a: " + nested(10) + "}}}\n"),
        "must be a string",
    ),
    (
        "header map nested past 64 levels",
        route("      headers: {request: {set: {x-a: " + nested(70) + "}}}\n"),
        "nests deeper than 64 levels",
    ),
    ("nested map as a header match", route("      match: [{headers: {x-a: " + nested(10) + "}}]\n"), "x-a"),
    (
        "20000 headers set",
        route("      headers: {request: {set: {" + ", ".join(f"x-{i}: v" for i in range(20000)) + "}}}\n"),
        "Envoy takes at most 1000",
    ),
]


@pytest.mark.parametrize(("case", "text", "fragment"), REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_manifest_is_refused_in_one_line(case, text, fragment):
    with deadline(5.0, case):
        message = feed(text)
    assert message is not None, f"{case}: accepted"
    assert_one_line(message)
    assert fragment in message, message


ACCEPTED = [
    # Envoy and Istio take these; refusing them would be a divergence of its own.
    (
        "1 MiB prefix and rewrite",
        route("      match: [{uri: {prefix: '/" + "a" * MiB + "'}}]\n      rewrite: {uri: '/" + "b" * MiB + "'}\n"),
    ),
    (
        "a Service selecting no pod",
        "apiVersion: v1\nkind: Service\nmetadata: {name: lonely}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80}]\n",
    ),
    ("a subset matching no pod (answers 503)", WORKLOAD + rule("  subsets: [{name: v9, labels: {version: v9}}]\n")),
    ("'*/*' on a Gateway", WORKLOAD + gateway("['*/*']")),
    ("punycode host", WORKLOAD + gateway("['xn--bcher-kva.example.org']")),
]


@pytest.mark.parametrize(("case", "text"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_odd_but_valid_manifest_is_accepted(case, text):
    with deadline(5.0, case):
        assert feed(text) is None


# Through the command a user runs, on a running mesh: one per kind of hostility above.
THROUGH_THE_CLI = [
    "weight 10**30",
    "IDN host",
    "two wildcards",
    "two VirtualServices for one mesh host",
    "subset of no DestinationRule",
    "1 MiB env value",
    "20000 headers set",
]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    from tests.test_cli_local import CliMesh

    mesh = CliMesh(tmp_path_factory.mktemp("hostile") / "state")
    started = mesh.inv("local.up")
    assert started.returncode == 0, started.stderr
    yield mesh
    mesh.inv("local.down")


@pytest.mark.parametrize("case", THROUGH_THE_CLI)
def test_local_apply_refuses_and_changes_nothing(running, case, tmp_path):
    text = next(text for name, text, _ in REFUSED if name == case)
    before = (running.state / "state.json").read_bytes()
    manifest = tmp_path / "hostile.yaml"
    manifest.write_text(text)
    result = running.inv("local.apply", "-f", str(manifest))
    assert result.returncode == 1, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (running.state / "state.json").read_bytes() == before
