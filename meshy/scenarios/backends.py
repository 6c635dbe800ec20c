"""The two places a scenario can run: the local backend and a kind + Istio cluster.

A scenario only renders manifests, applies them, sends HTTP to the ingress
and reads a proxy's counters; each backend does those its own way.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Protocol

from meshy.console import Console
from meshy.local.backend import LocalBackend
from meshy.metrics import istio, prometheus
from meshy.net import wait_until
from meshy.render import RenderOptions, render
from meshy.versions import Pair


class ScenarioError(RuntimeError):
    """A scenario could not run (not a failed verdict): the message says why."""


class Backend(Protocol):
    name: str
    pair: Pair
    options: RenderOptions

    @property
    def ingress(self) -> str: ...

    def apply(self, template: str, options: RenderOptions | None = None) -> None: ...

    def delete(self, template: str, options: RenderOptions | None = None) -> None: ...

    def remove_selector_label(self, service: str, label: str) -> None: ...

    def counters(self, proxy: str, prefix: str) -> dict[str, int]: ...

    def config_dump(self, proxy: str) -> dict: ...

    def external_log(self) -> str: ...


class LocalScenarioBackend:
    name = "local"

    def __init__(self, local: LocalBackend, pair: Pair) -> None:
        self.local = local
        self.pair = pair
        self.options = RenderOptions()

    @property
    def ingress(self) -> str:
        return self.local.ingress_url

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        self.local.apply(render(template, self.pair, options or self.options), template)

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.local.delete(render(template, self.pair, options or self.options), template)

    def remove_selector_label(self, service: str, label: str) -> None:
        self.local.remove_selector_label(service, label)

    def counters(self, proxy: str, prefix: str) -> dict[str, int]:
        """A cluster's upstream requests, read from the mesh's Istio metrics (as Envoy's stat name)."""
        cluster = prefix.removeprefix("cluster.").removesuffix(".")
        samples = prometheus.parse(self.local.metrics_text())
        count = istio.upstream_requests(samples, proxy, istio.cluster_host(cluster))
        return {f"{prefix}upstream_rq_total": count}

    def snapshot(self, name: str, out_dir: Path, console: Console) -> list[Path]:
        """The metrics that decided a scenario and a screenshot of the dashboard, beside its report."""
        from meshy.dashboard import browser

        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = out_dir / f"{name}.metrics.prom"
        metrics.write_text(self.local.metrics_text())
        try:
            shot = browser.screenshot(self.local.layout.dashboard_url + "/", out_dir / f"{name}.dashboard.png")
        except browser.BrowserError as error:
            console.info(f"note: no dashboard screenshot for {name}: {error}")
            return [metrics]
        return [metrics, shot]

    def config_dump(self, proxy: str) -> dict:
        import requests

        address = self.local.admin_address(proxy)
        return requests.get(f"http://{address}/config_dump", timeout=5, proxies={"http": ""}).json()

    def external_log(self) -> str:
        return self.local.log_file("minimal-external").read_text(errors="replace")


class KindScenarioBackend:
    """A kind + Istio cluster built by `inv up`: kubectl, the proxies' admin API, docker logs."""

    name = "kind"

    def __init__(self, env) -> None:
        from meshy.kind import steps
        from meshy.render import External

        self.env = env
        self.pair = env.pair
        address = steps.external_up(env)
        self.options = dataclasses.replace(env.options, external=External(address=address))

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.options.ports.ingress_host}"

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        text = render(template, self.pair, options or self.options)
        self.env.run(self.env.kubectl("apply -f -"), stdin=text)
        for name in re.findall(r"^kind: Deployment\nmetadata:\n  name: (\S+)", text, re.M):
            self.env.run(self.env.kubectl(f"rollout status deploy/{name} --timeout=300s"))

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        text = render(template, self.pair, options or self.options)
        self.env.run(self.env.kubectl("delete --ignore-not-found -f -"), stdin=text)

    def remove_selector_label(self, service: str, label: str) -> None:
        selector = self.env.query(self.env.kubectl(f"get svc {service} -o jsonpath='{{.spec.selector}}'"))
        if f'"{label}"' in selector:
            patch = json.dumps([{"op": "remove", "path": f"/spec/selector/{label}"}])
            self.env.run(self.env.kubectl(f"patch svc {service} --type json -p '{patch}'"))

    def _admin(self, proxy: str, path: str) -> str:
        namespace = "istio-system" if proxy.startswith("istio-") else "default"
        command = f"-n {namespace} exec deploy/{proxy} -c istio-proxy -- pilot-agent request GET {path}"
        return self.env.query(self.env.kubectl(command))

    def counters(self, proxy: str, prefix: str) -> dict[str, int]:
        counters = {}
        for line in self._admin(proxy, "stats").splitlines():
            name, _, value = line.rpartition(": ")
            if name.startswith(prefix) and value.isdigit():
                counters[name] = int(value)
        return counters

    def config_dump(self, proxy: str) -> dict:
        text = self._admin(proxy, "config_dump")
        return json.loads(text) if text else {}

    def external_log(self) -> str:
        from meshy.kind.context import EXTERNAL

        return self.env.query(f"docker logs {EXTERNAL} 2>&1")


def route_targets(config_dump: dict, domain: str) -> dict[str, int]:
    """cluster -> weight of the first route of the virtual host serving `domain`.

    Walks any config dump (inline route configs locally, RDS in Istio).
    """
    for virtual_host in _virtual_hosts(config_dump):
        if domain in virtual_host.get("domains", []) and virtual_host.get("routes"):
            action = virtual_host["routes"][0].get("route", {})
            if "cluster" in action:
                return {action["cluster"]: 100}
            return {c["name"]: int(c.get("weight", 0)) for c in action.get("weighted_clusters", {}).get("clusters", [])}
    return {}


def _virtual_hosts(node: object):
    if isinstance(node, dict):
        if isinstance(node.get("virtual_hosts"), list):
            yield from node["virtual_hosts"]
        for value in node.values():
            yield from _virtual_hosts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _virtual_hosts(value)


def counter(counters: dict[str, int], suffix: str) -> int:
    return sum(value for name, value in counters.items() if name.endswith(suffix))


def wait_for(check, what: str, timeout: float = 60.0) -> float:
    """Poll until check() holds; return how long it took. Never a fixed sleep."""
    started = time.monotonic()
    if not wait_until(check, timeout=timeout, interval=0.05):
        raise ScenarioError(f"{what} was not observed within {timeout:.0f}s; check the backend with its status task.")
    return time.monotonic() - started
