"""The local backend serves what each matrix release's Istio CRDs serve: API versions and fields.

Read from the CRD schemas of each release (MESHY_ISTIO_CRDS, default
../shared/istio-crds/<release>/crd-all.gen.yaml), the same ones `nox -s render` uses.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from meshy import ROOT
from meshy.local.release import release_of
from meshy.local.resources import ResourceError, parse_documents
from meshy.local.shapes import ISTIO_VERSIONS, KINDS
from meshy.validate import crd_file, istio_schemas
from meshy.versions import load_matrix
from tests.test_local_fields import field_paths

CRDS = os.environ.get("MESHY_ISTIO_CRDS") or str(ROOT.parent / "shared" / "istio-crds")
ISTIO_KINDS = [kind for kind, (versions, _) in KINDS.items() if versions == ISTIO_VERSIONS]
PAIRS = load_matrix()


def schema_paths(schema: dict[str, Any], prefix: str = "spec") -> set[str]:
    """Dotted paths of every property under a CRD schema node (lists and maps see through)."""
    found = set()
    for name, node in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        found.add(path)
        while True:
            if node.get("type") == "array" and "items" in node:
                node = node["items"]
            elif isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
                node = node["additionalProperties"]
            else:
                break
        found |= schema_paths(node, path)
    return found


@pytest.fixture(scope="module", params=PAIRS, ids=lambda pair: pair.istio)
def served(request):
    pair = request.param
    schemas = istio_schemas(crd_file(pair, CRDS))
    return release_of(pair.istio), schemas


def test_api_versions_are_those_the_release_serves(served):
    release, schemas = served
    for kind in ISTIO_KINDS:
        assert sorted(release.api_versions) == sorted(v for v, k in schemas if k == kind), kind


def test_every_accepted_field_is_served_exactly_when_the_release_has_it(served):
    release, schemas = served
    wrong = []
    for kind in ISTIO_KINDS:
        version = next(v for v, k in schemas if k == kind)
        in_schema = schema_paths(schemas[(version, kind)]["properties"]["spec"])
        for dotted in field_paths(KINDS[kind][1]):
            if (dotted in in_schema) != release.serves(kind, dotted):
                wrong.append(f"{kind} {dotted}")
    assert not wrong, f"Istio {release.version}: served locally but not upstream, or the reverse: {wrong}"


def test_a_field_newer_than_the_release_is_refused_by_name():
    text = (
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: vs}\n"
        "spec:\n  hosts: [web]\n  http:\n    - directResponse: {status: 200}\n"
    )
    with pytest.raises(ResourceError, match=r"field spec\.http\[0\]\.directResponse is not served by Istio 1\.8"):
        parse_documents(text, "x", release_of("1.8.6"))
    assert parse_documents(text, "x", release_of("1.28.10"))


def test_the_mesh_keeps_its_pair_for_every_later_apply(tmp_path):
    from meshy.console import Console
    from meshy.local.backend import LocalBackend, LocalConfig, State
    from meshy.local.resources import ResourceSet

    backend = LocalBackend(LocalConfig(tmp_path), Console(quiet=True))
    old = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: vs}\nspec: {hosts: [web]}\n"
    resources = ResourceSet().applied(parse_documents(old, "x", release_of("1.8")))
    backend.save(State(resources=resources, pair="1.19-istio-1.8"))
    state = backend.load()
    assert state.release.version == "1.8"
    with pytest.raises(ResourceError, match="not served by Istio 1.8"):
        parse_documents(old.replace("v1alpha3", "v1"), "x", state.release)
    assert State().release.version == load_matrix()[-1].istio
