"""Rendering per pair, the version matrix, and schema validation of what is rendered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from meshy import ROOT
from meshy.render import RenderOptions, render, render_all, template_names
from meshy.validate import (
    ValidationSetupError,
    crd_file,
    istio_schemas,
    kind_variants,
    validate_istio,
    validate_tree,
)
from meshy.versions import VersionError, load_matrix, select_pair

CRDS = os.environ.get("MESHY_ISTIO_CRDS") or str(ROOT.parent / "shared" / "istio-crds")
WALKTHROUGH_FILES = {
    "istio/services-gateway.yaml",
    "istio/services-gateway-istio.yaml",
    "istio/kiali-virtualservice.yaml",
    "istio/minimal-virtualservice.yaml",
    "istio/bounced-virtualservice-retries.yaml",
    "istio/minimal-destinationrule.yaml",
    "istio/minimal-virtualservice-split.yaml",
    "istio/egress-gateway.yaml",
    "istio/egress-virtualservice.yaml",
    "istio/service-entry.yaml",
}


def test_matrix_holds_the_walkthrough_pair_and_two_current_ones():
    pairs = load_matrix()
    names = [p.name for p in pairs]
    assert "1.19-istio-1.8" in names
    assert len(pairs) >= 3
    assert select_pair().name == names[-1]
    for pair in pairs:
        assert pair.supported(), pair.name
        assert "@sha256:" in pair.node_image and len(pair.node_image.split("@sha256:")[1]) == 64
        assert pair.node_version.startswith(pair.k8s + ".")


def test_pair_outside_istios_range_is_refused():
    with pytest.raises(VersionError, match="Istio 1.30 supports Kubernetes 1.32 to 1.36, not 1.19"):
        select_pair("1.19", "1.30")
    with pytest.raises(VersionError, match="No version pair has"):
        select_pair("1.99", None)


def test_rendered_files_keep_the_walkthrough_names(tmp_path):
    written = {p.relative_to(tmp_path).as_posix() for p in render_all(select_pair(), tmp_path)}
    assert written >= WALKTHROUGH_FILES
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("k8s", "istio", "istio_api", "ingress_api"),
    [
        ("1.19", "1.8", "networking.istio.io/v1alpha3", "networking.k8s.io/v1beta1"),
        ("1.36", "1.30", "networking.istio.io/v1", "networking.k8s.io/v1"),
    ],
)
def test_api_versions_follow_the_pair(k8s, istio, istio_api, ingress_api):
    pair = select_pair(k8s, istio)
    assert yaml.safe_load(render("istio/minimal-virtualservice.yaml.j2", pair))["apiVersion"] == istio_api
    assert yaml.safe_load(render("ingress/minimal-service-ingress.yaml.j2", pair))["apiVersion"] == ingress_api


def test_split_weights_and_external_address_are_options():
    pair = select_pair()
    split = yaml.safe_load(
        render("istio/minimal-virtualservice-split.yaml.j2", pair, RenderOptions(split={"v1": 90, "v2": 10}))
    )
    assert [r["weight"] for r in split["spec"]["http"][0]["route"]] == [90, 10]
    from meshy.render import External

    entry = yaml.safe_load(
        render("istio/service-entry.yaml.j2", pair, RenderOptions(external=External(address="172.18.0.9")))
    )
    assert entry["spec"]["resolution"] == "STATIC" and entry["spec"]["endpoints"] == [{"address": "172.18.0.9"}]
    # In the sidecars' DNS table only with an address (istio pkg/dns/server/name_table.go): cluster DNS has no record.
    assert entry["spec"]["addresses"] == ["172.18.0.9"]
    local = yaml.safe_load(render("istio/service-entry.yaml.j2", pair))["spec"]
    assert local["resolution"] == "DNS" and "addresses" not in local


@pytest.mark.parametrize("pair", load_matrix(), ids=lambda p: p.name)
def test_every_pair_installs_istio_with_dns_capture_and_both_gateways(pair):
    # ISTIO_META_DNS_CAPTURE is off by default (pilot-agent), so the app could not resolve the external host.
    operator = yaml.safe_load(render("kind/istio-operator.yaml.j2", pair))
    assert operator["spec"]["meshConfig"]["defaultConfig"]["proxyMetadata"] == {"ISTIO_META_DNS_CAPTURE": "true"}
    assert operator["spec"]["components"]["egressGateways"][0]["enabled"] is True


def test_every_template_renders_for_every_pair():
    for pair in load_matrix():
        for name in template_names():
            for document in yaml.safe_load_all(render(name, pair)):
                assert document is None or "kind" in document, (pair.name, name)


def test_istio_schemas_catch_bad_fields_and_unserved_versions():
    old = istio_schemas(crd_file(select_pair("1.19", "1.8"), CRDS))
    vs = yaml.safe_load(render("istio/minimal-virtualservice.yaml.j2", select_pair("1.19", "1.8")))
    assert validate_istio(vs, old) == []
    vs["spec"]["hosts"] = "not-a-list"
    assert any("hosts" in problem for problem in validate_istio(vs, old))
    new_style = yaml.safe_load(render("istio/minimal-virtualservice.yaml.j2", select_pair()))
    assert "not served by this Istio release" in validate_istio(new_style, old)[0]


def test_newest_pair_validates_cleanly(tmp_path):
    pair = select_pair()
    render_all(pair, tmp_path)
    checked, problems = validate_tree(pair, tmp_path, CRDS, extra=kind_variants(pair))
    assert checked >= 15
    assert problems == []
    # The kind variant is checked too: a field the schema does not know would be named.
    entry = kind_variants(pair)["istio/service-entry.yaml (kind)"]
    bad = {"x.yaml": entry.replace("addresses:\n    - 172.18.0.9", "addresses: 172.18.0.9")}
    assert [p.message for p in validate_tree(pair, tmp_path, CRDS, extra=bad)[1]] != []


def test_missing_schemas_say_where_to_point(tmp_path):
    with pytest.raises(ValidationSetupError, match="no CRD schemas for Istio 1.30.3"):
        crd_file(select_pair(), str(tmp_path))


def test_workflow_runs_every_pair_with_time_limits_and_a_pinned_kubectl():
    workflow = yaml.safe_load((Path(__file__).parents[1] / ".github/workflows/e2e.yml").read_text())
    jobs = workflow["jobs"]
    assert all(job.get("timeout-minutes") for job in jobs.values())
    names = [pair.name for pair in load_matrix()]
    assert jobs["kind"]["strategy"]["matrix"]["pair"] == names
    assert jobs["standins"]["strategy"]["matrix"]["pair"] == names
    setup = next(
        step["run"] for step in jobs["kind"]["steps"] if step.get("name") == "kind and kubectl matching the pair"
    )
    # kubectl of the cluster's own version: the runner's kubectl is far outside the skew for Kubernetes 1.19.
    assert "dl.k8s.io/release/v$node_version/bin/linux/amd64/kubectl" in setup
    assert "kind.sigs.k8s.io/dl/$kind_version/" in setup


RESILIENCE_RULES = (
    "istio/slow-virtualservice-timeout.yaml.j2",
    "istio/minimal-virtualservice-fault.yaml.j2",
    "istio/minimal-virtualservice-fault-unset.yaml.j2",
    "istio/minimal-virtualservice-mirror.yaml.j2",
    "istio/slow-destinationrule-circuit-breaker.yaml.j2",
    "istio/flaky-destinationrule-outlier.yaml.j2",
)


@pytest.mark.parametrize("pair", load_matrix(), ids=lambda pair: pair.name)
def test_resilience_rules_fit_every_pairs_istio_schema(pair):
    # The fields the resilience scenarios use (fault percentage, mirrorPercentage, consecutive5xxErrors,
    # connectionPool) are served by every release of the matrix, 1.8 included.
    schemas = istio_schemas(crd_file(pair, CRDS))
    for name in RESILIENCE_RULES:
        document = yaml.safe_load(render(name, pair))
        assert validate_istio(document, schemas) == [], (pair.name, name)
    unset = yaml.safe_load(render("istio/minimal-virtualservice-fault-unset.yaml.j2", pair))["spec"]["http"][0]
    assert "percentage" not in unset["fault"]["delay"] and "percentage" not in unset["fault"]["abort"]
    # The schema does check these fields: a share that is not a number is named.
    fault = yaml.safe_load(render("istio/minimal-virtualservice-fault.yaml.j2", pair))
    fault["spec"]["http"][0]["fault"]["abort"]["percentage"]["value"] = "half"
    assert validate_istio(fault, schemas) != []
