"""Golden tests of the translation, one layer at a time: testdata/local/in/*.yaml
-> model/*.json (build.py) -> out/*.json (envoy.py).

Each input names the proxies to pin (`# golden-proxies: a, b`) and may pull in
shared workloads (`# include: file`). Regenerate with MESHY_UPDATE_GOLDEN=1
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshy import ROOT
from meshy.local import envoy, gateway_tls, origination, topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.model import Proxy, from_data, to_data
from meshy.local.release import DEFAULT_RELEASE, release_of
from meshy.local.resources import ResourceSet, parse_documents

DATA = Path(__file__).parent / "testdata" / "local"
CASES = sorted(p.stem for p in (DATA / "in").glob("*.yaml") if not p.name.startswith("_"))
HOSTS = {"minimal.external.kind.org": "127.13.0.1"}
# The system roots an origination without caCertificates trusts (1.28 on): the same relative path on
# every machine, so that the goldens do not depend on this one's CA bundle or on where the clone is.
SYSTEM_BUNDLE = "tests/testdata/local/in/_system-roots.pem"


@pytest.fixture(autouse=True)
def system_bundle(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(origination, "SYSTEM_BUNDLES", (SYSTEM_BUNDLE,))


def directives(text: str, name: str) -> list[str]:
    return [
        item.strip()
        for line in text.splitlines()
        if line.startswith(f"# {name}:")
        for item in line.split(":", 1)[1].split(",")
    ]


def pinned_proxies(case: str) -> dict[str, Proxy]:
    """resources -> model: the proxies a case pins, by the name it gives them."""
    text = (DATA / "in" / f"{case}.yaml").read_text()
    sources = [(DATA / "in" / extra).read_text() for extra in directives(text, "include")] + [text]
    resources = ResourceSet().applied(r for source in sources for r in parse_documents(source, case))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    release = next(iter(directives(text, "release")), DEFAULT_RELEASE.version)
    mesh = build_mesh(Inputs(resources, pods, topology.gateways(layout), HOSTS, release_of(release)))
    return {
        wanted: next(p for name, p in mesh.proxies.items() if name == wanted or name.startswith(wanted + "-"))
        for wanted in directives(text, "golden-proxies")
    }


def envoy_config(proxies: dict[str, Proxy]) -> dict:
    """model -> Envoy: listeners, routes and clusters of each proxy."""
    result = {}
    for wanted, proxy in proxies.items():
        result[wanted] = {
            "listeners": envoy.lds(proxy, Path("/meshy/envoy") / proxy.name),
            "routes": envoy.rds(proxy),
            "clusters": envoy.cds(proxy),
        }
        credentials = gateway_tls.credential_secrets(proxy.listeners) + origination.file_secrets(proxy.files)
        # A gateway's certificates from Secrets, files for originations (the mesh's own identities are not pinned).
        if credentials:
            result[wanted]["secrets"] = credentials
    return result


def matches_golden(got: dict, golden: Path) -> bool:
    if os.environ.get("MESHY_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    return got == json.loads(golden.read_text())


@pytest.mark.parametrize("case", CASES)
def test_resources_to_model_matches_golden(case):
    got = {name: to_data(proxy) for name, proxy in pinned_proxies(case).items()}
    assert matches_golden(got, DATA / "model" / f"{case}.json")


@pytest.mark.parametrize("case", CASES)
def test_model_to_envoy_matches_golden(case):
    # Starts from the pinned model, not from resources: a failure here is envoy.py's alone.
    model = json.loads((DATA / "model" / f"{case}.json").read_text())
    proxies = {name: from_data(Proxy, data) for name, data in model.items()}
    assert matches_golden(envoy_config(proxies), DATA / "out" / f"{case}.json")


def test_the_model_round_trips_through_data():
    for case in CASES:
        for proxy in pinned_proxies(case).values():
            assert from_data(Proxy, json.loads(json.dumps(to_data(proxy)))) == proxy


def test_every_case_has_golden_files():
    assert CASES
    assert sorted(p.stem for p in (DATA / "out").glob("*.json")) == CASES
    assert sorted(p.stem for p in (DATA / "model").glob("*.json")) == CASES
