"""Manifests as validated resources, identified by kind, namespace and name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshy.errors import MeshyError
from meshy.local.credentials import secret_problems
from meshy.local.release import DEFAULT_RELEASE, FIELDS_SINCE, IstioRelease
from meshy.local.shapes import (
    ISTIO_VERSIONS,
    KINDS,
    METADATA,
    NAME_SYNTAX,
    SECURITY_VERSIONS,
    TOP_LEVEL_FIELDS,
    brief,
    check,
    field_occurrences,
    name_problem,
    plain,
    written,
)

# A message stays on one line and under this many characters.
MAX_MESSAGE = 299


class ResourceError(MeshyError, ValueError):
    """A manifest the local backend refuses; nothing was changed.

    The message is one line under MAX_MESSAGE characters whatever it quotes: a long
    middle (names, hosts) is cut so the resource in front and the fix at the end stay.
    """

    def __init__(self, message: str) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            head = (MAX_MESSAGE - 5) * 2 // 3
            text = text[:head] + " ... " + text[-(MAX_MESSAGE - 5 - head) :]
        super().__init__(text)


class BuildError(ResourceError):
    """Resources that are each valid but cannot work together."""


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
        if self.kind in TOP_LEVEL_FIELDS:
            return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, **self.spec}
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, "spec": self.spec}


# Bounds of what the local backend reads: a manifest is a few hundred nodes; these
# refuse YAML alias bombs and pathological nesting before anything walks them.
MAX_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """The safe loader (libyaml's when present) that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ResourceError(
                        f"key {brief(key, 30)} appears twice in one mapping (line {line}); keep one of them"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def one_line(problems: list[str]) -> str:
    """Problems joined on one line; past MAX_MESSAGE characters the rest are counted, not shown."""
    text = ""
    for index, problem in enumerate(problems):
        candidate = problem if not text else f"{text}; {problem}"
        rest = len(problems) - index - 1
        tail = f" (and {rest} more)" if rest else ""
        if len(candidate) + len(tail) > MAX_MESSAGE:
            if not text:
                return candidate[: MAX_MESSAGE - len(tail) - 3] + "..." + tail
            return f"{text} (and {len(problems) - index} more)"
        text = candidate
    return text


def decode(data: str | bytes, source: str) -> str:
    """Manifest text as str; bytes that are not UTF-8 are refused in one line."""
    if isinstance(data, str):
        return data
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ResourceError(f"{source} is UTF-16 text; save it as UTF-8 and apply again.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ResourceError(
            f"{source} is not UTF-8 text (byte {error.start} cannot be decoded); save it as UTF-8 and apply again."
        ) from None


def node_bounds(root: yaml.Node) -> tuple[int, int]:
    """How many nodes the document has with every alias expanded, and how deep it nests."""
    memo: dict[int, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in memo:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in memo)
            continue
        size = min(MAX_NODES + 1, 1 + sum(memo[id(c)][0] for c in children))
        memo[id(node)] = (size, 1 + max((memo[id(c)][1] for c in children), default=0))
    return memo[id(root)]


def load_documents(text: str, source: str) -> list[Any]:
    """The documents of a YAML text, or one ResourceError line saying why they cannot be read."""
    if len(text) > MAX_BYTES:
        raise ResourceError(f"{source} is larger than {MAX_BYTES // 1024 // 1024} MiB; split it into smaller files.")
    loader = _Loader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            size, depth = node_bounds(node)
            if size > MAX_NODES:
                raise ResourceError(
                    f"{source} document {len(documents) + 1} expands to more than {MAX_NODES} values "
                    "(YAML aliases?); write the values out."
                )
            if depth > MAX_DEPTH:
                raise ResourceError(
                    f"{source} document {len(documents) + 1} nests deeper than {MAX_DEPTH} levels; "
                    "no manifest the local backend accepts is that deep."
                )
            document = loader.construct_document(node)
            if document is not None:
                documents.append(document)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ResourceError(
            one_line([f"{source} is not valid YAML{where} ({reason}); fix the syntax and apply again."])
        ) from None
    except RecursionError:
        raise ResourceError(
            f"{source} nests too deeply to read; no manifest the local backend accepts is that deep."
        ) from None
    finally:
        loader.dispose()
    return documents


def parse_documents(
    data: str | bytes, source: str = "<input>", release: IstioRelease = DEFAULT_RELEASE, with_spec: bool = True
) -> list[Resource]:
    """Every resource of a multi-document YAML text, validated; all problems at once, on one line.

    with_spec=False reads only what names a resource (kubectl delete -f ignores the rest).
    """
    documents = load_documents(decode(data, source), source)
    resources, problems = [], []
    for index, document in enumerate(documents):
        try:
            resources.append(parse_resource(document, release, with_spec))
        except ResourceError as error:
            problems.append(f"{source} document {index + 1}: {error}")
    if problems:
        raise ResourceError(one_line(problems))
    return resources


def parse_resource(document: Any, release: IstioRelease = DEFAULT_RELEASE, with_spec: bool = True) -> Resource:
    if not isinstance(document, dict):
        raise ResourceError("a manifest must be a mapping with apiVersion, kind and metadata")
    kind = document.get("kind")
    if kind == "List":
        raise ResourceError("kind List is not supported; write one document per resource")
    api_version = document.get("apiVersion")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    where = f"{plain(kind)} {plain(name) if name else '<unnamed>'}"
    if not isinstance(kind, str) or kind not in KINDS:
        supported = ", ".join(KINDS)
        raise ResourceError(f"kind {brief(kind)} is not supported by the local backend (supported: {supported})")
    versions, shape = KINDS[kind]
    istio = versions in (ISTIO_VERSIONS, SECURITY_VERSIONS)
    if versions == ISTIO_VERSIONS:
        versions = release.api_versions
    elif versions == SECURITY_VERSIONS:
        versions = release.security_api_versions
    if api_version not in versions:
        raise ResourceError(
            f"{where}: apiVersion {brief(api_version)} is not served by "
            f"{'Istio ' + release.version if istio else 'the API server'} "
            f"(served: {', '.join(versions)})"
        )
    if not isinstance(metadata, dict):
        raise ResourceError(f"{where}: metadata must be a mapping with at least a name")
    problems = check(metadata, METADATA, "metadata")
    if isinstance(name, str) and not problems and (rule := name_problem(name, NAME_SYNTAX.get(kind, "subdomain"))):
        problems.append(f"metadata.name {rule}, not {brief(name)}")
    top = TOP_LEVEL_FIELDS.get(kind)
    allowed = ("apiVersion", "kind", "metadata", *(top or ("spec",)))
    unknown_top = [key for key in document if key not in allowed]
    problems += [f"field {plain(key)} is not supported by the local backend" for key in unknown_top]
    spec = {key: document[key] for key in top if key in document} if top else document.get("spec")
    spec = {} if spec is None or not with_spec else spec
    if shape is not None and with_spec:
        problems += check(spec, shape, "spec")
        if kind == "Secret" and not problems:
            problems += secret_problems(spec)
        problems += [
            f"field {written(at)} is not served by Istio {release.version} "
            f"(from Istio 1.{FIELDS_SINCE[f'{kind} {dotted}']})"
            for dotted, at in field_occurrences(spec, shape)
            if f"{kind} {dotted}" in FIELDS_SINCE and not release.serves(kind, dotted)
        ]
    elif shape is None and spec:
        problems.append(f"{kind} takes no spec in the local backend")
    if problems:
        raise ResourceError(one_line([f"{where}: {problems[0]}"] + problems[1:]))
    namespace = "" if kind == "Namespace" else metadata.get("namespace", "default")
    return Resource(kind, api_version, name, namespace, dict(metadata.get("labels") or {}), spec)


# Fields the API server keeps as created (apps/v1 ValidateDeploymentUpdate: the selector).
IMMUTABLE = {"Deployment": ("selector",)}


@dataclass
class ResourceSet:
    """The applied resources, in the order they were first created."""

    items: dict[Key, Resource] = field(default_factory=dict)

    def applied(self, resources: Iterable[Resource]) -> ResourceSet:
        """A new set with resources created or replaced (kubectl apply); self is unchanged."""
        items = dict(self.items)
        for resource in resources:
            old = items.get(resource.key)
            for name in IMMUTABLE.get(resource.kind, ()):
                if old is not None and old.spec.get(name) != resource.spec.get(name):
                    raise ResourceError(
                        f"{resource.key}: spec.{name} cannot change once created, as the API server refuses; "
                        f"delete the {resource.kind} and apply it again"
                    )
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
    def from_list(cls, documents: list[dict[str, Any]], release: IstioRelease = DEFAULT_RELEASE) -> ResourceSet:
        return cls().applied(parse_resource(d, release) for d in documents)
