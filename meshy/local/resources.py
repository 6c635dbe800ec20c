"""Manifests as validated resources, identified by kind, namespace and name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshy.errors import MeshyError
from meshy.local.shapes import KINDS, METADATA, check


class ResourceError(MeshyError, ValueError):
    """A manifest the local backend refuses; nothing was changed."""


@dataclass(frozen=True)
class Key:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str
    name: str
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def key(self) -> Key:
        return Key(self.kind, self.namespace, self.name)

    def to_dict(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = self.labels
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, "spec": self.spec}


def parse_documents(text: str, source: str = "<input>") -> list[Resource]:
    """Every resource of a multi-document YAML text, validated; all problems at once."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ResourceError(f"{source} is not valid YAML ({error}); fix the syntax and apply again.") from None
    resources, problems = [], []
    for index, document in enumerate(documents):
        try:
            resources.append(parse_resource(document))
        except ResourceError as error:
            problems.append(f"{source} document {index + 1}: {error}")
    if problems:
        raise ResourceError("; ".join(problems))
    return resources


def parse_resource(document: Any) -> Resource:
    if not isinstance(document, dict):
        raise ResourceError("a manifest must be a mapping with apiVersion, kind and metadata")
    if document.get("kind") == "List":
        raise ResourceError("kind List is not supported; write one document per resource")
    kind = document.get("kind")
    api_version = document.get("apiVersion")
    metadata = document.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    where = f"{kind} {name or '<unnamed>'}"
    if kind not in KINDS:
        supported = ", ".join(KINDS)
        raise ResourceError(f"kind {kind!r} is not supported by the local backend (supported: {supported})")
    versions, shape = KINDS[kind]
    if api_version not in versions:
        raise ResourceError(f"{where}: apiVersion {api_version!r} is not one of {', '.join(versions)}")
    problems = check(metadata, METADATA, "metadata")
    if not name:
        problems.append("metadata.name is required")
    unknown_top = set(document) - {"apiVersion", "kind", "metadata", "spec"}
    problems += [f"field {key} is not supported by the local backend" for key in sorted(unknown_top)]
    spec = document.get("spec") or {}
    if shape is not None:
        problems += check(spec, shape, "spec")
    elif spec:
        problems.append(f"{kind} takes no spec in the local backend")
    if problems:
        raise ResourceError(f"{where}: " + "; ".join(problems))
    namespace = "" if kind == "Namespace" else metadata.get("namespace", "default")
    return Resource(kind, api_version, name, namespace, dict(metadata.get("labels") or {}), spec)


@dataclass
class ResourceSet:
    """The applied resources, in the order they were first created."""

    items: dict[Key, Resource] = field(default_factory=dict)

    def applied(self, resources: Iterable[Resource]) -> ResourceSet:
        """A new set with resources created or replaced (kubectl apply); self is unchanged."""
        items = dict(self.items)
        for resource in resources:
            items[resource.key] = resource
        return ResourceSet(items)

    def deleted(self, resources: Iterable[Resource]) -> tuple[ResourceSet, list[Key]]:
        """A new set without resources; also the keys that were not there."""
        items = dict(self.items)
        missing = []
        for resource in resources:
            if items.pop(resource.key, None) is None:
                missing.append(resource.key)
        return ResourceSet(items), missing

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.items.values() if r.kind == kind]

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.items.values()]

    @classmethod
    def from_list(cls, documents: list[dict[str, Any]]) -> ResourceSet:
        return cls().applied(parse_resource(d) for d in documents)
