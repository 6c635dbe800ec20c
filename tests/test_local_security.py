"""PeerAuthentication and DestinationRule tls as Istio composes them, and what is refused (pure: no Envoy)."""

from __future__ import annotations

import pytest

from meshy.local.build import BuildError
from meshy.local.release import IstioRelease
from meshy.local.resources import ResourceError
from tests.test_local_refusals import build


def security(kind: str, namespace: str, spec: str, name: str) -> str:
    """A security.istio.io resource (v1beta1: served by every release of the matrix)."""
    return f"""
apiVersion: security.istio.io/v1beta1
kind: {kind}
metadata: {{name: {name}, namespace: {namespace}}}
spec: {spec}
"""


def peer_auth(namespace: str, spec: str, name: str = "p") -> str:
    return security("PeerAuthentication", namespace, spec, name)


def inbound_mode(text: str) -> str:
    proxy = next(p for name, p in build(text).proxies.items() if name.startswith("web-"))
    return next(item.peer_mode for item in proxy.listeners if item.name == "inbound_9090")


def web_cluster(text: str):
    proxy = next(p for name, p in build(text).proxies.items() if name.startswith("web-"))
    return next(c for c in proxy.clusters if c.name == "outbound|9090||web.default.svc.cluster.local")


@pytest.mark.parametrize(
    ("policies", "mode"),
    [
        ([], "PERMISSIVE"),
        ([("istio-system", "{mtls: {mode: STRICT}}")], "STRICT"),
        # UNSET inherits; the namespace overrides the mesh; the workload overrides both.
        ([("istio-system", "{mtls: {mode: STRICT}}"), ("default", "{mtls: {mode: UNSET}}")], "STRICT"),
        ([("istio-system", "{mtls: {mode: STRICT}}"), ("default", "{mtls: {mode: DISABLE}}")], "DISABLE"),
        (
            [("default", "{mtls: {mode: STRICT}}"), ("default", "{selector: {matchLabels: {app: web}}, mtls: {}}")],
            "STRICT",
        ),
        (
            [
                ("default", "{mtls: {mode: DISABLE}}"),
                ("default", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"),
            ],
            "STRICT",
        ),
        # A selector that does not match leaves the namespace's mode.
        ([("default", "{selector: {matchLabels: {app: other}}, mtls: {mode: STRICT}}")], "PERMISSIVE"),
        # Port-level: UNSET takes the workload's mode; another port's setting does not apply.
        (
            [
                (
                    "default",
                    "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {9090: {mode: UNSET}}}",
                )
            ],
            "STRICT",
        ),
        ([("default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {9090: {mode: STRICT}}}")], "STRICT"),
        ([("default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {'9091': {mode: STRICT}}}")], "PERMISSIVE"),
    ],
)
def test_peer_authentication_composes_mesh_namespace_workload_and_port(policies, mode):
    text = "---\n".join(peer_auth(ns, spec, f"p{i}") for i, (ns, spec) in enumerate(policies))
    assert inbound_mode(text) == mode


def test_auto_mtls_follows_the_destinations_peer_mode_and_a_destination_rule_overrides_it():
    auto = web_cluster("")
    assert (auto.tls, auto.sni) == ("auto", "outbound_.9090_._.web.default.svc.cluster.local")
    assert auto.peer_identities == ("spiffe://cluster.local/ns/default/sa/default",)
    assert all(ep.mtls for ep in auto.endpoints)
    disabled = web_cluster(peer_auth("default", "{mtls: {mode: DISABLE}}"))
    assert disabled.tls == "none" and not any(ep.mtls for ep in disabled.endpoints)
    rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: web\n"
    forced = web_cluster(
        peer_auth("default", "{mtls: {mode: DISABLE}}")
        + "---\n"
        + rule
        + "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}"
    )
    assert forced.tls == "istio" and all(ep.mtls for ep in forced.endpoints)
    plain = web_cluster(rule + "  trafficPolicy: {tls: {mode: DISABLE}}")
    assert plain.tls == "none" and not any(ep.mtls for ep in plain.endpoints)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            peer_auth("istio-system", "{mtls: {mode: STRICT}}", "a") + "---\n" + peer_auth("istio-system", "{}", "b"),
            "PeerAuthentication istio-system/b: PeerAuthentication istio-system/a already sets peer authentication for the mesh",
        ),
        (
            peer_auth("istio-system", "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"),
            "a selector in the root namespace istio-system selects no workload",
        ),
        (peer_auth("default", "{portLevelMtls: {9090: {mode: STRICT}}}"), "spec.portLevelMtls needs spec.selector"),
        (
            peer_auth("default", "{selector: {matchLabels: {app: web}}}", "a")
            + "---\n"
            + peer_auth("default", "{selector: {matchLabels: {version: v1}}}", "b"),
            "already selects the same workload",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec: {host: web, trafficPolicy: {tls: {mode: MUTUAL}}}",
            "spec.trafficPolicy.tls mode MUTUAL needs clientCertificate and privateKey",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n"
            "spec: {host: web, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: x}}}",
            "field spec.trafficPolicy.tls.sni is not supported locally with mode ISTIO_MUTUAL",
        ),
        (peer_auth("default", "{mtls: {mode: strict}}"), "spec.mtls.mode"),
        (
            peer_auth("default", "{selector: {matchLabels: {app: web}}, portLevelMtls: {http: {mode: STRICT}}}"),
            "a port number from 1 to 65535",
        ),
    ],
)
def test_refusals_name_the_policy_and_the_fix(text, message):
    with pytest.raises((BuildError, ResourceError)) as refused:
        build(text)
    assert message in str(refused.value)


def test_security_v1_is_served_from_istio_1_22_only():
    text = peer_auth("default", "{mtls: {mode: STRICT}}").replace("v1beta1", "v1")
    with pytest.raises(ResourceError, match="apiVersion 'security.istio.io/v1' is not served by Istio 1.8"):
        build(text, IstioRelease("1.8"))
    assert build(text.replace("security.istio.io/v1", "security.istio.io/v1beta1"), IstioRelease("1.8"))


def policy(namespace: str, spec: str, name: str = "a") -> str:
    return security("AuthorizationPolicy", namespace, spec, name)


def web_authz(text: str):
    proxy = next(p for name, p in build(text).proxies.items() if name.startswith("web-"))
    return next(item.authz for item in proxy.listeners if item.name == "inbound_9090")


def test_authorization_scope_order_and_policies_without_rules():
    assert web_authz("") is None
    # Root namespace: mesh-wide; another namespace's policy does not apply; a selector narrows.
    assert web_authz(policy("istio-system", "{action: DENY, rules: [{}]}")).deny[0].name == (
        "ns[istio-system]-policy[a]-rule[0]"
    )
    assert web_authz("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---" + policy("other", "{}")) is None
    assert web_authz(policy("default", "{selector: {matchLabels: {app: nobody}}, rules: [{}]}")) is None
    # An ALLOW policy without rules allows nothing; a DENY one denies nothing.
    allow_nothing = web_authz(policy("default", "{}"))
    assert allow_nothing.deny == () and [r.never for r in allow_nothing.allow] == [True]
    both = web_authz(policy("default", "{action: DENY}", "d") + "---" + policy("default", "{rules: [{}]}"))
    assert [r.never for r in both.deny] == [True] and both.allow[0].sources is None
    # The ingress gateway is a workload of istio-system: root-namespace policies selecting it apply to it.
    gateway = build(policy("istio-system", "{selector: {matchLabels: {istio: ingressgateway}}, rules: [{}]}"))
    assert all(item.authz is not None for item in gateway.proxies["istio-ingressgateway"].listeners)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cluster.local/ns/default/sa/web", ("exact", "spiffe://cluster.local/ns/default/sa/web")),
        ("cluster.local/ns/default/*", ("prefix", "spiffe://cluster.local/ns/default/")),
        ("*/sa/web", ("regex", "spiffe://.*/sa/web")),
        ("*", ("regex", ".+")),
    ],
)
def test_principals_match_as_istio_writes_them(value, expected):
    from meshy.local.security import istio_match

    match = istio_match(value, "spiffe://")
    assert (match.kind, match.value) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{action: AUDIT}", "spec.action AUDIT is not supported by the local backend yet; use ALLOW or DENY"),
        ("{action: CUSTOM}", "spec.action CUSTOM is not supported"),
        ("{rules: [{when: [{key: 'request.auth.audiences', values: [x]}]}]}", "when key request.auth.audiences"),
        ("{rules: [{when: [{key: 'request.auth.claims[a][b]', values: [x]}]}]}", "when key request.auth.claims[a][b]"),
        ("{rules: [{from: [{source: {ipBlocks: [1.2.3.4]}}]}]}", "field spec.rules[0].from[0].source.ipBlocks"),
        ("{rules: [{to: [{operation: {ports: ['80']}}]}]}", "field spec.rules[0].to[0].operation.ports"),
    ],
)
def test_authorization_refusals_name_the_field(spec, message):
    with pytest.raises((BuildError, ResourceError)) as refused:
        build(policy("default", spec))
    assert message in str(refused.value)
