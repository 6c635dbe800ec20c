"""The two places a scenario can run: the local backend and a kind + Istio cluster.

A scenario only renders manifests, applies them, sends HTTP to the ingress
and reads counters - Istio's standard metrics as named proxies report them
(`istio_metrics`, queried by meshy.metrics.istio the same way on both
backends), the apps' own /metrics (a cross-check), a proxy's config dump;
each backend reads them its own way.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from meshy.console import Console
from meshy.errors import MeshyError
from meshy.local.backend import LocalBackend
from meshy.local.topology import TCP_PORT
from meshy.local.upstreams import gateway_target_port
from meshy.metrics import istio, prometheus
from meshy.net import wait_until
from meshy.render import RenderOptions, render
from meshy.scenarios import https, tcp_client
from meshy.scenarios.certificates import Issued
from meshy.scenarios.traffic import WORKERS, Request, Result, send
from meshy.versions import Pair


class ScenarioError(MeshyError, RuntimeError):
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

    def send(self, request: Request, n: int, progress=None, workers: int = WORKERS) -> list[Result]: ...

    def poll(self, check: Callable[[], bool], timeout: float) -> bool: ...

    def app_metrics(self, service: str) -> str: ...

    def istio_metrics(self, *workloads: str) -> list[prometheus.Sample]: ...

    def gateway_requests(self, gateway: str, host: str) -> int: ...

    def proxy_metrics(self, proxy: str) -> str: ...

    def config_dump(self, proxy: str) -> dict: ...

    def external_log(self) -> str: ...

    def external_cas(self) -> tuple[str, str]: ...

    def outside_call(self, service: str) -> bool: ...

    def destination_requests(self, workload: str, **labels: str) -> int: ...

    def https_calls(self, host: str, trust: str, client: Issued | None, n: int) -> list[str]: ...

    def tcp_connections(self, host: str, n: int) -> list[str]: ...


class LocalScenarioBackend:
    name = "local"

    def __init__(self, local: LocalBackend, pair: Pair) -> None:
        self.local = local
        self.pair = pair
        self.options = RenderOptions()
        self.browser = None  # one headless Chromium for every scenario's screenshot, started on the first

    @property
    def ingress(self) -> str:
        return self.local.ingress_url

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        self.local.apply(render(template, self.pair, options or self.options), template)

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.local.delete(render(template, self.pair, options or self.options), template)

    def remove_selector_label(self, service: str, label: str) -> None:
        self.local.remove_selector_label(service, label)

    def send(self, request: Request, n: int, progress=None, workers: int = WORKERS) -> list[Result]:
        return send(request, n, progress, workers)

    def poll(self, check: Callable[[], bool], timeout: float) -> bool:
        return wait_until(check, timeout=timeout, interval=0.05)

    def app_metrics(self, service: str) -> str:
        """The /metrics text of the first pod the Service selects, read from its app directly (as the API
        server's service proxy reaches one of them on kind)."""
        services = self.local.resources().of_kind("Service")
        selector = next((r.spec.get("selector", {}) for r in services if r.name == service), {"app": service})
        pod = next((p for p in self.local.pods() if selector.items() <= p.labels.items()), None)
        if pod is None:
            raise ScenarioError(f"no pod of {service} runs in the local mesh; run inv local.up.")
        return http_text(f"http://{pod.app_ip}:{pod.ports[0]}/metrics")

    def https_calls(self, host: str, trust: str, client: Issued | None, n: int) -> list[str]:
        """HTTPS calls to the ingress gateway's port 443 (see meshy.local.topology.gateways for where it listens)."""
        layout = self.local.layout
        if layout.ingress_tls_port:
            address, port = layout.ingress_host, layout.ingress_tls_port
        else:
            address, port = layout.gateway_ip(0), gateway_target_port(443)
        return https.calls(address, port, host, trust, client, n)

    def tcp_connections(self, host: str, n: int) -> list[str]:
        """Connections to the ingress gateway's TCP port 31400, one request each: the answering pods."""
        layout = self.local.layout
        if layout.ingress_tcp_port:
            address, port = layout.ingress_host, layout.ingress_tcp_port
        else:
            address, port = layout.gateway_ip(0), TCP_PORT
        return tcp_client.connections(address, port, host, n)

    def istio_metrics(self, *workloads: str) -> list[prometheus.Sample]:
        """The workloads' proxies' own reports, from one read of the mesh-wide endpoint."""
        samples = prometheus.parse(self.local.metrics_text())
        return [s for workload in workloads for s in istio.reported_by(samples, workload)]

    def gateway_requests(self, gateway: str, host: str) -> int:
        return istio.requests(self.istio_metrics(gateway), host)

    def proxy_metrics(self, proxy: str) -> str:
        """Istio's standard metrics holding those the proxy reports (the mesh-wide endpoint: filter by
        source_workload or destination_workload)."""
        return self.local.metrics_text()

    def snapshot(self, name: str, out_dir: Path, console: Console) -> list[Path]:
        """The metrics that decided a scenario and a screenshot of the dashboard, beside its report."""
        from meshy.dashboard import browser

        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = out_dir / f"{name}.metrics.prom"
        metrics.write_text(self.local.metrics_text())
        try:
            if self.browser is None:
                self.browser = browser.Browser().start()
            shot = self.browser.screenshot(self.local.layout.dashboard_url + "/", out_dir / f"{name}.dashboard.png")
        except browser.BrowserError as error:
            console.info(f"note: no dashboard screenshot for {name}: {error}")
            self.close()  # the next scenario starts a new browser
            return [metrics]
        return [metrics, shot]

    def close(self) -> None:
        """End the browser the screenshots were taken in."""
        if self.browser is not None:
            self.browser.close()
            self.browser = None

    def config_dump(self, proxy: str) -> dict:
        return self.local.config_dump(proxy)

    def external_log(self) -> str:
        return self.local.log_file("minimal-external").read_text(errors="replace")

    def external_cas(self) -> tuple[str, str]:
        """PEM of the CA that signed the external service's certificate, and of one that signed nothing here."""
        return read_cas(self.local.external_tls_dir, "inv local.down and inv local.up")

    def outside_call(self, service: str) -> bool:
        """Plain HTTP from outside the mesh straight to the sidecar of the service's pod, on a new
        connection; whether it was answered (a refused connection is not)."""
        pod = next((p for p in self.local.pods() if p.labels.get("app") == service), None)
        if pod is None:
            raise ScenarioError(f"no pod of {service} runs in the local mesh; run inv local.up.")
        return answered(f"http://{pod.ip}:{pod.ports[0]}/")

    def destination_requests(self, workload: str, **labels: str) -> int:
        """istio_requests_total as the workload's sidecar reports what reached it (reporter destination)."""
        return destination_requests(self.istio_metrics(workload), workload, **labels)


class KindScenarioBackend:
    """A kind + Istio cluster built by `inv up`, reached through kubectl and docker only.

    Every read goes through the environment's runner, so under --dry each one
    is a line of the plan; traffic is not sent then, and each wait checks once.
    """

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
        self.env.run(self.env.kubectl("apply", "-f", "-"), stdin=text)
        for name in re.findall(r"^kind: Deployment\nmetadata:\n  name: (\S+)", text, re.M):
            self.env.run(self.env.kubectl("rollout", "status", f"deploy/{name}", "--timeout=300s"))

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        text = render(template, self.pair, options or self.options)
        self.env.run(self.env.kubectl("delete", "--ignore-not-found", "-f", "-"), stdin=text)

    def remove_selector_label(self, service: str, label: str) -> None:
        selector = self.env.query(self.env.kubectl("get", "svc", service, "-o", "jsonpath={.spec.selector}"))
        if f'"{label}"' in selector or self.env.dry:
            patch = json.dumps([{"op": "remove", "path": f"/spec/selector/{label}"}])
            self.env.run(self.env.kubectl("patch", "svc", service, "--type", "json", "-p", patch))

    def send(self, request: Request, n: int, progress=None, workers: int = WORKERS) -> list[Result]:
        if self.env.dry:
            self.env.console.info(f"# would send {n} x {request.method} {request.url} (Host {request.headers['Host']})")
            return [Result(0, "", 0.0)] * n
        return send(request, n, progress, workers)

    def https_calls(self, host: str, trust: str, client: Issued | None, n: int) -> list[str]:
        """HTTPS calls to the host port kind maps to the ingress gateway's port 443 (node port)."""
        port = self.options.ports.ingress_https_host
        if self.env.dry:
            self.env.console.info(f"# would make {n} HTTPS calls to 127.0.0.1:{port} (SNI and Host {host})")
            return [""] * n
        return https.calls("127.0.0.1", port, host, trust, client, n)

    def tcp_connections(self, host: str, n: int) -> list[str]:
        """Connections to the host port kind maps to the ingress gateway's TCP port 31400 (node port)."""
        port = self.options.ports.tcp_host
        if self.env.dry:
            self.env.console.info(f"# would open {n} TCP connections to 127.0.0.1:{port}, one request each")
            return [""] * n
        return tcp_client.connections("127.0.0.1", port, host, n)

    def poll(self, check: Callable[[], bool], timeout: float) -> bool:
        if self.env.dry:
            check()  # its commands are part of the plan; nothing can be observed
            return True
        return wait_until(check, timeout=timeout, interval=0.5)

    def _admin(self, proxy: str, path: str) -> str:
        """An Envoy admin path of a proxy, through pilot-agent (present in every Istio release of the matrix)."""
        namespace = "istio-system" if proxy.startswith("istio-") else "default"
        command = ("-n", namespace, "exec", f"deploy/{proxy}", "-c", "istio-proxy", "--")
        return self.env.query(self.env.kubectl(*command, "pilot-agent", "request", "GET", path))

    def app_metrics(self, service: str) -> str:
        """The app's own /metrics through the API server's service proxy (no tool needed in the image)."""
        path = f"/api/v1/namespaces/default/services/{service}:http/proxy/metrics"
        return self.env.query(self.env.kubectl("get", "--raw", path))

    def istio_metrics(self, *workloads: str) -> list[prometheus.Sample]:
        """Each workload's proxy's stats/prometheus (one pod per Deployment in the walkthrough). Istio's
        standard metrics are on by default in 1.8 (telemetry v2 EnvoyFilters, manifests/charts/istio-control/
        istio-discovery/templates/telemetryv2_1.8.yaml) and built in from then on; their stats (named
        "reporter=...") pass the bootstrap's stats matcher (tools/packaging/common/envoy_bootstrap.json, all
        three releases), and the proxy serves them on stats/prometheus."""
        return [s for workload in workloads for s in prometheus.parse(self._admin(workload, "stats/prometheus"))]

    def gateway_requests(self, gateway: str, host: str) -> int:
        return istio.requests(self.istio_metrics(gateway), host)

    def proxy_metrics(self, proxy: str) -> str:
        """The proxy's own stats/prometheus: istio_requests_total with its response_flags label (see
        gateway_requests for where each release of the matrix serves it)."""
        return self._admin(proxy, "stats/prometheus")

    def config_dump(self, proxy: str) -> dict:
        text = self._admin(proxy, "config_dump")
        return json.loads(text) if text else {}

    def external_log(self) -> str:
        from meshy.kind.context import EXTERNAL

        return self.env.query(["docker", "logs", EXTERNAL])

    def external_cas(self) -> tuple[str, str]:
        """The CAs made for the external container (its certificate's, and a stranger), from the cache."""
        from meshy.kind import steps

        directory = steps.external_tls_dir(self.env)
        if self.env.dry and not (directory / "ca.crt").exists():
            return "DRY-RUN CA", "DRY-RUN OTHER CA"
        return read_cas(directory, "docker rm -f minimal-external, then run the scenario again")

    def outside_call(self, service: str) -> bool:
        """The API server's service proxy: it connects to the pod in plain HTTP from outside the mesh,
        so a STRICT sidecar refuses it (the API server reports it could not reach the service) and an
        AuthorizationPolicy that needs a principal answers 403."""
        path = f"/api/v1/namespaces/default/services/{service}:http/proxy/"
        return self.env.query(self.env.kubectl("get", "--raw", path), absent=OUTSIDE_REFUSED) != ""

    def destination_requests(self, workload: str, **labels: str) -> int:
        """istio_requests_total of the workload's sidecar as destination reporter (Istio's standard metric,
        with source_principal and connection_security_policy from the connection's peer certificate)."""
        return destination_requests(self.istio_metrics(workload), workload, **labels)


def route_targets(config_dump: dict, domain: str) -> dict[str, int]:
    """cluster -> weight of the first route of the virtual host serving `domain`.

    Walks any config dump (inline route configs locally, RDS in Istio).
    """
    action = first_route(config_dump, domain).get("route", {})
    if "cluster" in action:
        return {action["cluster"]: 100}
    return {c["name"]: int(c.get("weight", 0)) for c in action.get("weighted_clusters", {}).get("clusters", [])}


def first_route(config_dump: dict, domain: str) -> dict:
    """The first route of the virtual host serving `domain` ({} when none does)."""
    for virtual_host in _virtual_hosts(config_dump):
        if domain in virtual_host.get("domains", []) and virtual_host.get("routes"):
            return virtual_host["routes"][0]
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


def app_requests(metrics: str, path: str) -> int:
    """Requests minimal-service served on one path, from its own /metrics (minimal_service/metrics.py)."""
    return int(prometheus.total(prometheus.parse(metrics), "minimal_service_requests_total", path=path))


# What the API server says when its proxied connection to a pod is closed or refused, or the pod's
# sidecar answers 403 (kubectl shows a proxied 4xx as an error of that status).
OUTSIDE_REFUSED = ("error trying to reach service", "connection reset by peer", "EOF", "(Forbidden)")


def destination_requests(samples: list[prometheus.Sample], workload: str, **labels: str) -> int:
    """istio_requests_total of what reached a workload, as its sidecar reports it (reporter destination)."""
    wanted = {"reporter": "destination", "destination_workload": workload, **labels}
    return int(sum(s.value for s in samples if s.matches(istio.REQUESTS, wanted)))


def http_text(url: str) -> str:
    import requests

    try:
        return requests.get(url, timeout=5, proxies={"http": ""}).text
    except requests.RequestException as error:
        raise ScenarioError(
            f"cannot read {url} ({type(error).__name__}); check the backend with its status task."
        ) from None


def answered(url: str) -> bool:
    """Whether a plain GET on a connection of its own gets a 200 (a connection closed unanswered does not)."""
    import requests

    try:
        return requests.get(url, timeout=5, proxies={"http": ""}, headers={"Connection": "close"}).status_code == 200
    except requests.ConnectionError:
        return False


def read_cas(directory: Path, restart: str) -> tuple[str, str]:
    try:
        return (directory / "ca.crt").read_text(), (directory / "other-ca.crt").read_text()
    except OSError as error:
        raise ScenarioError(
            f"the external service's CA is missing ({error.strerror}: {error.filename}): it was started by an "
            f"older kube-meshy without TLS; restart it: {restart}"
        ) from None


def wait_for(backend: Backend, check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Poll until check() holds; return how long it took. Never a fixed sleep."""
    started = time.monotonic()
    if not backend.poll(check, timeout):
        raise ScenarioError(f"{what} was not observed within {timeout:.0f}s; check the backend with its status task.")
    return time.monotonic() - started
