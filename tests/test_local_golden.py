"""Golden tests of the translation: testdata/local/in/*.yaml -> out/*.json.

Each input names the proxies to pin (`# golden-proxies: a, b`) and may pull in
shared workloads (`# include: file`). Regenerate with MESHY_UPDATE_GOLDEN=1
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshy.local import envoy, topology
from meshy.local.build import Inputs, build_mesh
from meshy.local.resources import ResourceSet, parse_documents

DATA = Path(__file__).parent / "testdata" / "local"
CASES = sorted(p.stem for p in (DATA / "in").glob("*.yaml") if not p.name.startswith("_"))
HOSTS = {"minimal.external.kind.org": "127.13.0.1"}


def directives(text: str, name: str) -> list[str]:
    return [
        item.strip()
        for line in text.splitlines()
        if line.startswith(f"# {name}:")
        for item in line.split(":", 1)[1].split(",")
    ]


def translate(case: str) -> dict:
    text = (DATA / "in" / f"{case}.yaml").read_text()
    sources = [(DATA / "in" / extra).read_text() for extra in directives(text, "include")] + [text]
    resources = ResourceSet().applied(r for source in sources for r in parse_documents(source, case))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    mesh = build_mesh(Inputs(resources, pods, topology.gateways(layout), HOSTS))
    result = {}
    for wanted in directives(text, "golden-proxies"):
        proxy = next(p for name, p in mesh.proxies.items() if name == wanted or name.startswith(wanted + "-"))
        result[wanted] = {
            "listeners": envoy.lds(proxy),
            "routes": envoy.rds(proxy),
            "clusters": envoy.cds(proxy),
        }
    return result


@pytest.mark.parametrize("case", CASES)
def test_translation_matches_golden(case):
    got = translate(case)
    golden = DATA / "out" / f"{case}.json"
    if os.environ.get("MESHY_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())


def test_every_case_has_a_golden_file():
    assert CASES
    assert sorted(p.stem for p in (DATA / "out").glob("*.json")) == CASES
