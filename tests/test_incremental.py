"""An incremental build (one BuildMemo across many applies) equals a build from scratch, at every step.

Each step changes the resources the way an apply or delete does; after each one
every proxy's model, digest and xDS snapshot built with the shared memo must
equal those of a fresh build, and a refusal must be the same refusal. The steps
change what a VirtualService's routes depend on besides the resource itself
(DestinationRules, a Service's ports, the Istio release, the gateways), so a
memo that kept routes past such a change fails here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path

import pytest

from meshy.console import Console
from meshy.local import memo as memo_module
from meshy.local import topology
from meshy.local.backend import LocalBackend, LocalConfig, State, proxy_digest, proxy_snapshot
from meshy.local.build import Inputs, build_mesh, host_matches
from meshy.local.identity import MeshCA
from meshy.local.memo import BuildMemo
from meshy.local.release import release_of
from meshy.local.resources import BuildError, ResourceSet, parse_documents
from meshy.local.xds.snapshot import ROUTE, digest
from tests.local_mesh import Mesh

IN = Path(__file__).parent / "testdata" / "local" / "in"
LAYOUT = topology.Layout()
HOSTS = {"minimal.external.kind.org": "127.13.0.1"}


def vs(name: str, host: str, http: str, gateways: str = "[services-gateway]") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  gateways: {gateways}
  http:
{http}
"""


def rule(policy: str = "") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: minimal-destinationrule, namespace: default}}
spec:
  host: minimal-service
  {policy}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def service(port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: minimal-service, namespace: default, labels: {{app: minimal-service}}}}
spec:
  selector: {{app: minimal-service}}
  ports: [{{name: http, port: {port}, targetPort: 9090}}]
"""


SPLIT = vs(
    "minimal-virtualservice",
    "minimal.svc.kind.org",
    "  - route:\n"
    "    - {destination: {host: minimal-service, subset: v1}, weight: 70}\n"
    "    - {destination: {host: minimal-service, subset: v2}, weight: 30}",
)
PLAIN = vs("plain", "plain.svc.kind.org", "  - route: [{destination: {host: minimal-service}}]")
RETRIES = vs("plain", "plain.svc.kind.org", "  - retries: {attempts: 3}\n    route: [{destination: {host: web}}]")
# A second VirtualService on the split's host: the gateway merges the two.
MERGED = vs(
    "merged",
    "minimal.svc.kind.org",
    "  - match: [{uri: {prefix: /extra}}]\n    route: [{destination: {host: web}}]",
)
MESH_VS = vs("web-mesh", "web", "  - timeout: 2s\n    route: [{destination: {host: web}}]", gateways="[mesh]")
MESH_VS_CHANGED = vs("web-mesh", "web", "  - timeout: 3s\n    route: [{destination: {host: web}}]", gateways="[mesh]")
NARROW_GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: services-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [plain.svc.kind.org]
"""

SECURITY = """
apiVersion: security.istio.io/v1beta1
kind: {kind}
metadata: {{name: step, namespace: {namespace}}}
spec: {spec}
"""

# (what the step does, "apply" or "delete", manifests, Istio release)
STEPS = [
    ("the walkthrough's split", "apply", [rule(), service(9090), SPLIT, PLAIN], "1.30"),
    ("a second VirtualService merged on the host", "apply", [MERGED], "1.30"),
    ("retries on one VirtualService", "apply", [RETRIES], "1.30"),
    (
        "a consistent hash on the destination rule",
        "apply",
        [rule("trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}")],
        "1.30",
    ),
    ("the Service's port renumbered", "apply", [service(9091)], "1.30"),
    ("the destination rule deleted: subsets refused", "delete", [rule()], "1.30"),
    ("the destination rule back", "apply", [rule()], "1.30"),
    ("a mesh VirtualService", "apply", [MESH_VS], "1.30"),
    ("the mesh VirtualService changed", "apply", [MESH_VS_CHANGED], "1.30"),
    (
        "an earlier content again, as a new object",
        "apply",
        [vs("plain", "plain.svc.kind.org", "  - route: [{destination: {host: minimal-service}}]")],
        "1.30",
    ),
    ("a VirtualService deleted", "delete", [MERGED], "1.30"),
    ("the gateway narrowed to one host", "apply", [NARROW_GATEWAY], "1.30"),
    (
        "mesh-wide STRICT mTLS",
        "apply",
        [SECURITY.format(kind="PeerAuthentication", namespace="istio-system", spec="{mtls: {mode: STRICT}}")],
        "1.30",
    ),
    (
        "a DENY policy on the workloads",
        "apply",
        [
            SECURITY.format(
                kind="AuthorizationPolicy",
                namespace="default",
                spec="{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
            )
        ],
        "1.30",
    ),
    ("another Istio release", "apply", [], "1.8"),
    ("back to the first release", "apply", [], "1.30"),
]


def starting_resources() -> ResourceSet:
    text = (IN / "_workloads.yaml").read_text() + "\n---\n" + (IN / "traffic-split.yaml").read_text()
    return ResourceSet().applied(parse_documents(text, "start"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> MeshCA:
    return MeshCA(tmp_path_factory.mktemp("pki"))


def outcome(resources: ResourceSet, release: str, memo: BuildMemo | None, ca: MeshCA) -> object:
    """Every proxy's model, digest and snapshot, or the refusal."""
    pods, _ = topology.pods(resources, {}, LAYOUT)
    try:
        mesh = build_mesh(Inputs(resources, pods, topology.gateways(LAYOUT), HOSTS, release_of(release)), memo)
    except BuildError as error:
        return f"refused: {error}"
    return {
        name: (proxy, proxy_digest(proxy, memo), proxy_snapshot(proxy, Path("/meshy/envoy") / name, ca, memo))
        for name, proxy in mesh.proxies.items()
    }


def differing_steps(ca: MeshCA) -> list[str]:
    """The steps after which the incremental build differs from a fresh one."""
    memo = BuildMemo()
    resources = starting_resources()
    outcome(resources, "1.30", memo, ca)
    differing = []
    for what, verb, manifests, release in STEPS:
        documents = [r for text in manifests for r in parse_documents(text, what, release_of(release))]
        resources = resources.applied(documents) if verb == "apply" else resources.deleted(documents)[0]
        # Twice: a memo entry made by the first build is read by the second.
        for _ in range(2):
            if outcome(resources, release, memo, ca) != outcome(resources, release, None, ca):
                differing.append(what)
    return differing


def test_incremental_build_equals_a_fresh_build_at_every_step(ca):
    assert differing_steps(ca) == []


def test_every_step_changes_the_outcome(ca):
    # Without this the comparison above could pass with steps that change nothing a memo could miss.
    resources = starting_resources()
    previous = outcome(resources, "1.30", None, ca)
    unchanged = []
    for what, verb, manifests, release in STEPS:
        documents = [r for text in manifests for r in parse_documents(text, what, release_of(release))]
        resources = resources.applied(documents) if verb == "apply" else resources.deleted(documents)[0]
        current = outcome(resources, release, None, ca)
        if current == previous:
            unchanged.append(what)
        previous = current
    assert unchanged == []


def test_a_memo_blind_to_the_other_inputs_is_caught(monkeypatch, ca):
    """A memo that keeps routes whatever the registry, rules or release: the comparison names the steps."""
    monkeypatch.setattr(memo_module.RouteInputs, "of", classmethod(lambda cls, context: None))
    caught = differing_steps(ca)
    assert "a consistent hash on the destination rule" in caught
    assert "the Service's port renumbered" in caught
    assert "the destination rule deleted: subsets refused" in caught


def test_route_versions_from_kept_host_texts_are_the_digest_of_the_routes(ca):
    memo = BuildMemo()
    resources = starting_resources().applied(parse_documents(PLAIN + "---\n" + MERGED, "x"))
    for _ in range(2):
        pods, _ = topology.pods(resources, {}, LAYOUT)
        mesh = build_mesh(Inputs(resources, pods, topology.gateways(LAYOUT), HOSTS), memo)
        for name, proxy in mesh.proxies.items():
            routes = proxy_snapshot(proxy, Path("/meshy/envoy") / name, ca, memo)[ROUTE]
            assert routes.version == digest(list(routes.items.values()))


def test_a_memo_reuses_unchanged_virtual_hosts():
    """The point of the memo: one changed VirtualService leaves the others' objects, digests and JSON as they were."""
    memo = BuildMemo()
    many = "\n---\n".join(
        vs(f"scale-{i}", f"scale-{i}.svc.kind.org", "  - route: [{destination: {host: web}}]") for i in range(20)
    )
    resources = starting_resources().applied(parse_documents(many, "many"))
    pods, _ = topology.pods(resources, {}, LAYOUT)
    gateways = topology.gateways(LAYOUT)
    before = build_mesh(Inputs(resources, pods, gateways, HOSTS), memo).proxies["istio-ingressgateway"]
    change = vs("scale-3", "scale-3.svc.kind.org", "  - timeout: 1s\n    route: [{destination: {host: web}}]")
    after = build_mesh(Inputs(resources.applied(parse_documents(change, "x")), pods, gateways, HOSTS), memo)
    hosts_before = {h.name: h for h in before.listeners[0].virtual_hosts}
    hosts_after = {h.name: h for h in after.proxies["istio-ingressgateway"].listeners[0].virtual_hosts}
    kept = [name for name, host in hosts_after.items() if hosts_before.get(name) is host]
    assert sorted(set(hosts_after) - set(kept)) == ["scale-3.svc.kind.org:80"]


def test_state_written_from_kept_texts_reads_back_the_same(tmp_path):
    backend = LocalBackend(LocalConfig(tmp_path / "state"), Console(quiet=True))
    state = State(resources=starting_resources(), layout=LAYOUT, pair="1.36-istio-1.30")
    backend.save(state)
    changed = dataclasses.replace(state, resources=state.resources.applied(parse_documents(RETRIES, "x")))
    backend.save(changed)
    assert backend.read_state().resources == changed.resources


def test_a_running_mesh_holds_what_a_fresh_build_makes_after_each_apply(tmp_path):
    """Real Envoy proxies: after each apply (or refusal) every proxy's ACKed digest is a fresh build's."""
    mesh = Mesh(tmp_path / "state")
    backend = mesh.backend
    try:
        mesh.up()
        refused = []
        for what, verb, manifests, release in STEPS:
            if release != "1.30" or not manifests:
                continue
            text = "\n---\n".join(manifests)
            try:
                mesh.apply(text) if verb == "apply" else mesh.delete(text)
            except BuildError:
                refused.append(what)
            state = backend.load()
            pods, _ = topology.pods(state.resources, state.allocation, backend.layout)
            inputs = Inputs(state.resources, pods, topology.gateways(backend.layout), state.hosts, state.release)
            fresh = {name: proxy_digest(proxy) for name, proxy in build_mesh(inputs).proxies.items()}
            assert state.digests == fresh, what
        assert refused == ["the destination rule deleted: subsets refused"]
        # The last step narrowed the gateway to plain's host, whose route goes to the renumbered Service.
        assert mesh.get(host="plain.svc.kind.org").status_code == 200
        assert mesh.get(host="minimal.svc.kind.org").status_code == 404
    finally:
        backend.down()


@pytest.mark.parametrize(
    "pattern", ["*", "*.svc.kind.org", "*kind.org", "a.svc.kind.org", "*.s?c.kind.org", "*.[ab].org"]
)
@pytest.mark.parametrize("host", ["a.svc.kind.org", ".svc.kind.org", "svc.kind.org", "a.b.org", "x.svc.kind.org.evil"])
def test_gateway_host_matching_is_fnmatch(pattern, host):
    # build.host_matches skips fnmatch's regular expression for "*.suffix"; the answers must not change.
    assert host_matches(host, "default", pattern) == fnmatch.fnmatchcase(host, pattern)
    for namespace, allowed in (("default", True), ("*", True), (".", True), ("other", False), ("", False)):
        expected = allowed and fnmatch.fnmatchcase(host, pattern)
        assert host_matches(host, "default", f"{namespace}/{pattern}") == expected
