"""Validate rendered manifests: Kubernetes kinds with kubernetes-validate at the pair's
Kubernetes version, Istio kinds against that Istio release's CRD schemas.

The CRD schemas come from a directory holding <release>/crd-all.gen.yaml
(MESHY_ISTIO_CRDS); they are test data and never copied into the project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from meshy.errors import MeshyError
from meshy.versions import Pair

CRDS_ENV = "MESHY_ISTIO_CRDS"
# Files rendered for tools rather than for the API server (kind's and istioctl's inputs).
NOT_API_OBJECTS = ("kind/",)


class ValidationSetupError(MeshyError, RuntimeError):
    """Validation cannot run (schemas missing); the message says how to provide them."""


@dataclass(frozen=True)
class Problem:
    file: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.resource}: {self.message}"


def crd_file(pair: Pair, root: str | None = None) -> Path:
    root = root or os.environ.get(CRDS_ENV)
    if not root:
        raise ValidationSetupError(
            f"{CRDS_ENV} is not set: point it at a directory holding <istio-release>/crd-all.gen.yaml "
            "(for example ../shared/istio-crds)."
        )
    path = Path(root) / pair.istio_release / "crd-all.gen.yaml"
    if not path.exists():
        raise ValidationSetupError(
            f"no CRD schemas for Istio {pair.istio_release} at {path}; add them there or choose another {CRDS_ENV}."
        )
    return path


def istio_schemas(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> OpenAPI schema, for every served version of every CRD."""
    schemas = {}
    for crd in yaml.safe_load_all(path.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        shared = (spec.get("validation") or {}).get("openAPIV3Schema")  # apiextensions v1beta1
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            schema = (version.get("schema") or {}).get("openAPIV3Schema") or shared
            if schema:
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas


def validate_istio(document: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (document.get("apiVersion", ""), document.get("kind", ""))
    if key not in schemas:
        served = sorted(v for v, k in schemas if k == key[1])
        return [f"{key[0]} {key[1]} is not served by this Istio release (served: {', '.join(served) or 'none'})"]
    validator = jsonschema.Draft7Validator(schemas[key])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def validate_kubernetes(document: dict[str, Any], k8s: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(document, k8s, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [str(error).splitlines()[0]]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as error:
        return [f"no Kubernetes {k8s} schema for it ({error})"]
    return []


def validate_tree(
    pair: Pair, rendered: Path, crd_root: str | None = None, extra: dict[str, str] | None = None
) -> tuple[int, list[Problem]]:
    """Validate every object under rendered/ and in extra (name -> text); return the count and the problems."""
    schemas = istio_schemas(crd_file(pair, crd_root))
    checked, problems = 0, []
    texts = {path.relative_to(rendered).as_posix(): path.read_text() for path in sorted(rendered.rglob("*.yaml"))}
    for name, text in {**texts, **(extra or {})}.items():
        if name.startswith(NOT_API_OBJECTS):
            continue
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            checked += 1
            label = f"{document.get('kind')} {document.get('metadata', {}).get('name')}"
            if document.get("apiVersion", "").split("/")[0].endswith("istio.io"):
                messages = validate_istio(document, schemas)
            else:
                messages = validate_kubernetes(document, pair.k8s)
            problems += [Problem(name, label, message) for message in messages]
    return checked, problems


def kind_variants(pair: Pair) -> dict[str, str]:
    """Objects rendered only at run time on kind: the ServiceEntry at the external container's address."""
    from meshy.render import External, RenderOptions, render

    options = RenderOptions(external=External(address="172.18.0.9"))
    return {"istio/service-entry.yaml (kind)": render("istio/service-entry.yaml.j2", pair, options)}


def main(argv: list[str]) -> int:
    """python -m meshy.validate PAIR: render every template for PAIR and validate every object."""
    from meshy.render import build_dir, render_all
    from meshy.versions import load_matrix

    pairs = {p.name: p for p in load_matrix()}
    if len(argv) != 1 or argv[0] not in pairs:
        print(f"usage: python -m meshy.validate PAIR  (one of: {', '.join(pairs)})")
        return 2
    pair = pairs[argv[0]]
    out = build_dir(pair)
    written = render_all(pair, out)
    try:
        checked, problems = validate_tree(pair, out, extra=kind_variants(pair))
    except ValidationSetupError as error:
        print(f"error: {error}")
        return 2
    for problem in problems:
        print(f"✗ {problem}")
    print(
        f"{pair.name}: rendered {len(written)} files into {out}, validated {checked} objects, {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
