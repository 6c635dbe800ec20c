"""Numbers a scenario reads from the manifest it applies, so that its verdict follows the manifest."""

from __future__ import annotations

from typing import Any

import yaml

from meshy.local.shapes import seconds
from meshy.scenarios.backends import Backend


def objects(backend: Backend, template: str) -> list[dict[str, Any]]:
    """The objects of a template as the backend renders it for its pair."""
    from meshy.render import render

    return [doc for doc in yaml.safe_load_all(render(template, backend.pair, backend.options)) if doc]


def first_http_route(backend: Backend, template: str) -> dict[str, Any]:
    """spec.http[0] of the template's VirtualService."""
    service = next(doc for doc in objects(backend, template) if doc["kind"] == "VirtualService")
    return service["spec"]["http"][0]


def container_env(backend: Backend, template: str, name: str) -> str:
    """An environment variable of the template's Deployment's first container."""
    deployment = next(doc for doc in objects(backend, template) if doc["kind"] == "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return next(item["value"] for item in env if item["name"] == name)


__all__ = ["container_env", "first_http_route", "objects", "seconds"]
