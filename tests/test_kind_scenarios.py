"""The kind scenario backend's commands and parsing, against MockContext (no cluster here)."""

from __future__ import annotations

import json

from meshy.scenarios.backends import KindScenarioBackend
from meshy.versions import select_pair
from tests.plan import Plan

STATS = """cluster.outbound|9090||bounced-service.default.svc.cluster.local.upstream_rq_total: 42
cluster.outbound|9090||bounced-service.default.svc.cluster.local.upstream_rq_retry: 7
server.live: 1
"""


def backend(plan: Plan) -> KindScenarioBackend:
    return KindScenarioBackend(plan.env(select_pair()))


def test_external_service_runs_on_the_kind_network_and_feeds_the_service_entry():
    plan = Plan({r"State.Running}}' minimal-external": "", r"Networks.kind.IPAddress": "172.18.0.9"}, dry=False)
    kind = backend(plan)
    assert (
        "docker run -d --network kind -e SERVICE_ADDRESS=0.0.0.0 --name minimal-external localhost:5000/minimal-service:v1.0.0"
        in plan.commands
    )
    kind.apply("istio/service-entry.yaml.j2")
    applied = plan.c.run.call_args_list[-1]
    assert applied.args[0] == "kubectl --context kind-kube-meshy-1-36 apply -f -"
    stdin = applied.kwargs["in_stream"].getvalue()
    assert "resolution: STATIC" in stdin and "address: 172.18.0.9" in stdin


def test_deployments_are_awaited_and_deletes_tolerate_absence():
    plan = Plan({r"State.Running": "true", r"IPAddress": "172.18.0.9"}, dry=False)
    kind = backend(plan)
    kind.apply("services/minimal-service-v2.yaml.j2")
    assert (
        plan.commands[-1]
        == "kubectl --context kind-kube-meshy-1-36 rollout status deploy/minimal-service-v2 --timeout=300s"
    )
    kind.delete("istio/minimal-destinationrule.yaml.j2")
    assert plan.commands[-1] == "kubectl --context kind-kube-meshy-1-36 delete --ignore-not-found -f -"


def test_counters_and_config_dump_come_from_the_istio_proxy():
    dump = {"configs": [{"virtual_hosts": []}]}
    plan = Plan(
        {
            r"State.Running": "true",
            r"IPAddress": "172.18.0.9",
            r"GET stats": STATS,
            r"GET config_dump": json.dumps(dump),
        },
        dry=False,
    )
    kind = backend(plan)
    counters = kind.counters("minimal-service", "cluster.outbound|9090||bounced-service")
    assert counters == {
        "cluster.outbound|9090||bounced-service.default.svc.cluster.local.upstream_rq_total": 42,
        "cluster.outbound|9090||bounced-service.default.svc.cluster.local.upstream_rq_retry": 7,
    }
    assert (
        plan.commands[-1]
        == "kubectl --context kind-kube-meshy-1-36 -n default exec deploy/minimal-service -c istio-proxy -- pilot-agent request GET stats"
    )
    assert kind.config_dump("istio-egressgateway") == dump
    assert "-n istio-system exec deploy/istio-egressgateway" in plan.commands[-1]


def test_selector_patch_only_when_the_label_is_there():
    plan = Plan(
        {
            r"State.Running": "true",
            r"IPAddress": "172.18.0.9",
            r"spec.selector": '{"app":"minimal-service","version":"v1"}',
        },
        dry=False,
    )
    kind = backend(plan)
    kind.remove_selector_label("minimal-service", "version")
    assert plan.commands[-1].startswith("kubectl --context kind-kube-meshy-1-36 patch svc minimal-service --type json")
    plan.answers[r"spec.selector"] = '{"app":"minimal-service"}'
    before = len(plan.commands)
    kind.remove_selector_label("minimal-service", "version")
    assert len(plan.commands) == before + 1  # only the read
    assert kind.ingress == "http://127.0.0.1:8080"
