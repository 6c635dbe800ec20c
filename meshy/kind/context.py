"""Commands and Kubernetes API calls of the cluster path, and their dry-run stand-ins."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from invoke import Context

from meshy.console import Console
from meshy.errors import MeshyError
from meshy.net import port_in_use
from meshy.render import Ports, RenderOptions, build_dir
from meshy.versions import Pair


class ClusterError(MeshyError, RuntimeError):
    """The cluster path cannot go on; the message names the cause and the fix."""


REGISTRY = "kind-registry"
EXTERNAL = "minimal-external"
IMAGE = "minimal-service:v1.0.0"


@dataclass
class Env:
    """What every step needs: the invoke context, the pair, options and output."""

    c: Context
    pair: Pair
    console: Console
    kube: Kube
    options: RenderOptions = field(default_factory=RenderOptions)

    @property
    def dry(self) -> bool:
        return bool(self.c.config.run.dry)

    @property
    def build(self):
        return build_dir(self.pair)

    @property
    def ports(self) -> Ports:
        return self.options.ports

    @property
    def context_flag(self) -> str:
        return f"--context kind-{self.pair.cluster_name}"

    def kubectl(self, args: str) -> str:
        return f"kubectl {self.context_flag} {args}"

    def run(self, command: str, stdin: str | None = None) -> None:
        """A command that changes something; its failure stops the task."""
        kwargs = {"in_stream": io.StringIO(stdin)} if stdin is not None else {}
        result = self.c.run(command, warn=True, pty=False, **kwargs)
        if result is not None and result.exited not in (0, None) and not self.dry:
            raise ClusterError(f"`{command}` failed with exit code {result.exited}; see its output above.")

    def query(self, command: str) -> str:
        """A read-only command; empty when it fails (or under --dry, when nothing exists yet)."""
        result = self.c.run(command, warn=True, hide=True, pty=False)
        if result is None or result.exited not in (0, None):
            return ""
        return (result.stdout or "").strip()

    def done(self, message: str) -> None:
        self.console.info(f" ✓ {message} (already done, nothing changed)")


def require_tools(env: Env, *tools: str) -> None:
    if env.dry:
        return
    for tool in tools:
        if shutil.which(tool) is None:
            hint = {
                "docker": "install Docker and start it",
                "kind": "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
                "kubectl": "install kubectl",
            }.get(tool, f"install {tool}")
            raise ClusterError(f"{tool} is not on PATH; {hint}.")
    if "docker" in tools and not env.query("docker info --format '{{.ServerVersion}}'"):
        raise ClusterError("Docker is not running (docker info failed); start the Docker daemon and retry.")


def require_free_ports(env: Env, ports: dict[str, int]) -> None:
    if env.dry:
        return
    for what, port in ports.items():
        if port_in_use("127.0.0.1", port):
            raise ClusterError(f"port {port} ({what}) is already in use on 127.0.0.1; stop what uses it and retry.")


# --- Kubernetes API (the Python client) -------------------------------------------------


class Kube:
    """The few API calls the cluster path makes through the Kubernetes Python client."""

    def __init__(self, context: str) -> None:
        self.context = context
        self._core = None

    def core(self):
        if self._core is None:
            from kubernetes import client, config

            try:
                config.load_kube_config(context=self.context)
            except Exception as error:  # the client raises several unrelated types here
                raise ClusterError(
                    f"cannot load kubeconfig context {self.context} ({error}); create the cluster first."
                ) from None
            self._core = client.CoreV1Api()
        return self._core

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> str:
        from kubernetes.client import V1ConfigMap, V1ObjectMeta
        from kubernetes.client.exceptions import ApiException

        body = V1ConfigMap(metadata=V1ObjectMeta(name=name, namespace=namespace), data=data)
        try:
            current = self.core().read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            self.core().create_namespaced_config_map(namespace, body)
            return "created"
        if current.data == data:
            return "unchanged"
        self.core().replace_namespaced_config_map(name, namespace, body)
        return "configured"

    def label_namespace(self, namespace: str, key: str, value: str) -> str:
        labels = self.core().read_namespace(namespace).metadata.labels or {}
        if labels.get(key) == value:
            return "unchanged"
        self.core().patch_namespace(namespace, {"metadata": {"labels": {key: value}}})
        return "labelled"

    def pods_ready(self, namespace: str, selector: str) -> list[tuple[str, str]]:
        """(pod, "ready/total containers") for each pod the selector picks."""
        pods = self.core().list_namespaced_pod(namespace, label_selector=selector).items
        result = []
        for pod in pods:
            statuses = pod.status.container_statuses or []
            result.append((pod.metadata.name, f"{sum(1 for s in statuses if s.ready)}/{len(pod.spec.containers)}"))
        return result


class PlanKube(Kube):
    """Stands in for Kube under --dry and in tests: says what it would do."""

    def __init__(self, context: str, say: Callable[[str], None]) -> None:
        super().__init__(context)
        self.say = say

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> str:
        self.say(f"k8s: apply ConfigMap {namespace}/{name} ({', '.join(sorted(data))})")
        return "planned"

    def label_namespace(self, namespace: str, key: str, value: str) -> str:
        self.say(f"k8s: label Namespace {namespace} {key}={value}")
        return "planned"

    def pods_ready(self, namespace: str, selector: str) -> list[tuple[str, str]]:
        self.say(f"k8s: check pods {namespace} -l {selector} run 2/2 containers")
        return []
