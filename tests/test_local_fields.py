"""Nothing the local backend accepts is silently ignored.

Every field of every shape (meshy/local/shapes.py) is either honoured - taking
it out of a golden case (tests/testdata/local/in) changes the model or gets the
case refused - or named in NO_LOCAL_EFFECT / INERT with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import yaml

from meshy.local import topology
from meshy.local.build import BuildError, Inputs, build_mesh
from meshy.local.resources import ResourceError, ResourceSet, parse_resource
from meshy.local.shapes import INERT, KINDS, NO_LOCAL_EFFECT, TOP_LEVEL_FIELDS, MapOf, Required, field_occurrences
from tests.test_local_golden import CASES, DATA, HOSTS, directives


def field_paths(shape: Any, prefix: str = "spec") -> list[str]:
    """Dotted paths of every field a shape accepts (list items share their list's path)."""
    if isinstance(shape, Required):
        shape = shape.shape
    if isinstance(shape, list):
        return field_paths(shape[0], prefix)
    if isinstance(shape, MapOf):
        return field_paths(shape.value, prefix) if isinstance(shape.value, dict) else []
    if not isinstance(shape, dict):
        return []
    return [p for key, item in shape.items() for p in [f"{prefix}.{key}", *field_paths(item, f"{prefix}.{key}")]]


def case_documents(case: str) -> list[dict[str, Any]]:
    text = (DATA / "in" / f"{case}.yaml").read_text()
    sources = [(DATA / "in" / extra).read_text() for extra in directives(text, "include")] + [text]
    return [d for source in sources for d in yaml.safe_load_all(source) if d]


def model(documents: list[dict[str, Any]]) -> Any:
    """The whole mesh model and the pods, or the refusal."""
    try:
        resources = ResourceSet().applied(parse_resource(d) for d in documents)
        layout = topology.Layout()
        pods, _ = topology.pods(resources, {}, layout)
        mesh = build_mesh(Inputs(resources, pods, topology.gateways(layout), HOSTS))
    except (ResourceError, BuildError) as error:
        return f"refused: {error}"
    text = json.dumps([dataclasses.asdict(mesh), [dataclasses.asdict(p) for p in pods]], sort_keys=True)
    # Pod names hash the whole template, as Kubernetes does; that is not an effect of a field.
    for index, pod in enumerate(pods):
        text = text.replace(pod.name, f"{pod.deployment}-pod{index}")
    return text


def spec_of(document: dict[str, Any]) -> dict[str, Any]:
    """The fields a shape checks: spec, or for a Secret its top-level fields (the backend keeps them as its spec)."""
    if document["kind"] in TOP_LEVEL_FIELDS:
        return {key: document[key] for key in TOP_LEVEL_FIELDS[document["kind"]] if key in document}
    return document.get("spec") or {}


def without(document: dict[str, Any], at: tuple) -> dict[str, Any]:
    result = copy.deepcopy(document)
    parent = result if document["kind"] in TOP_LEVEL_FIELDS else result["spec"]
    for step in at[:-1]:
        parent = parent[step]
    del parent[at[-1]]
    return result


def honoured_fields() -> set[str]:
    """'Kind spec.path' of every field whose removal from some golden case changes the outcome."""
    honoured = set()
    for case in CASES:
        documents = case_documents(case)
        original = model(documents)
        for index, document in enumerate(documents):
            for dotted, at in field_occurrences(spec_of(document), KINDS[document["kind"]][1]):
                name = f"{document['kind']} {dotted}"
                if name in honoured:
                    continue
                changed = documents[:index] + [without(document, at)] + documents[index + 1 :]
                if model(changed) != original:
                    honoured.add(name)
    return honoured


def named(kind: str, dotted: str, tables: tuple[dict[str, str], ...] = (NO_LOCAL_EFFECT, INERT)) -> bool:
    """Whether a field, or a field it sits in, is named with a reason (by name, path or kind and path)."""
    parts = dotted.split(".")
    for end in range(2, len(parts) + 1):
        path = ".".join(parts[:end])
        if any(key in table for table in tables for key in (parts[end - 1], path, f"{kind} {path}")):
            return True
    return False


def shared_field(kind: str, dotted: str) -> tuple[int, str]:
    """A field as the shape that holds it: one shape object (a traffic policy's parts, a
    destination) reused at several places is read by one piece of build.py code."""
    shape: Any = KINDS[kind][1]
    holder: Any = shape
    for key in dotted.split(".")[1:]:
        holder = shape
        shape = shape[key]
        while isinstance(shape, (Required, MapOf, list)):
            shape = (
                shape.shape if isinstance(shape, Required) else shape.value if isinstance(shape, MapOf) else shape[0]
            )
    return id(holder), dotted.rsplit(".", 1)[-1]


def test_every_accepted_field_is_honoured_or_named():
    honoured = {shared_field(*name.split(" ", 1)) for name in honoured_fields()}
    silent = [
        f"{kind} {dotted}"
        for kind, (_, shape) in KINDS.items()
        if shape is not None
        for dotted in field_paths(shape)
        if shared_field(kind, dotted) not in honoured and not named(kind, dotted)
    ]
    assert not silent, "accepted but neither honoured in a golden case nor named: " + ", ".join(silent)


def test_a_field_named_without_effect_has_none():
    # A NO_LOCAL_EFFECT note on a field that does change the mesh would mislead users.
    # Except annotations: the note names only those other than HONOURED_ANNOTATIONS (sidecar mounts).
    partly = {"Deployment spec.template.metadata.annotations"}
    misnamed = [
        name
        for name in honoured_fields()
        if named(*name.split(" ", 1), tables=(NO_LOCAL_EFFECT,)) and name not in partly
    ]
    assert not misnamed
