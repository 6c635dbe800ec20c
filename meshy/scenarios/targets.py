"""Services a scenario deploys for minimal-service to call (POST /bounce), with one Istio rule in front."""

from __future__ import annotations

from meshy.console import Console
from meshy.scenarios.backends import Backend, wait_for
from meshy.scenarios.traffic import Request, Result


def upstream(result: Result) -> str:
    """The status line minimal-service got from its sidecar for the target ('' when the bounce failed)."""
    return str(result.json().get("body", "")) if result.status == 200 else ""


def answered(result: Result) -> bool:
    return upstream(result) == "200 OK"


def name_of(template: str) -> str:
    return template.rsplit("/", 1)[-1].removesuffix(".yaml.j2")


def deploy(backend: Backend, console: Console, service: str, rule: str, request: Request) -> None:
    """The target's template applied, its rule not (yet), and a first call answered."""
    with console.step(f"deploy {name_of(service)}, without {name_of(rule)}"):
        backend.delete(rule)  # a no-op when absent, as on a fresh baseline
        backend.apply(service)
        wait_for(backend, lambda: answered(backend.send(request, 1)[0]), f"an answer of {name_of(service)}")


def remove(backend: Backend, console: Console, service: str, rule: str) -> None:
    with console.step(f"remove {name_of(rule)} and {name_of(service)} (back to the baseline)"):
        backend.delete(rule)
        backend.delete(service)
