"""Envoy checks new snapshots before any proxy gets them: one `envoy --mode validate` run per apply.

Every changed proxy's clusters and listeners go into one static bootstrap,
named `<proxy>/<name>` so Envoy's message says whose they are, with each
listener's route configuration inlined where ADS would deliver it. Validate
mode builds the whole configuration as a running server would, without
binding or connecting (source/server/config_validation/server.cc at v1.40.0).
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson

from meshy.errors import MeshyError
from meshy.local.envoy import runtime
from meshy.local.identity import throwaway_identity
from meshy.local.tls import CERTIFICATE, ROOT, secrets, uses_secrets
from meshy.local.xds.snapshot import CLUSTER, LISTENER, ROUTE, SECRET, Resources, Snapshot

# Envoy's line for a configuration it refuses: "... error initializing configuration '<file>': <why>".
REFUSAL = re.compile(r"error initializing configuration '[^']*': (.*)")
MAX_DETAIL = 220
MAX_ACCEPTED_HOSTS = 100_000


class ConfigRejected(MeshyError, ValueError):
    def __init__(self, proxy: str, detail: str) -> None:
        super().__init__(f"{proxy}: {detail}")
        self.proxy = proxy
        self.detail = detail


def duplicate_domain(route: dict[str, Any]) -> str | None:
    """The first domain two virtual hosts of one route configuration share (Envoy refuses that)."""
    seen: set[str] = set()
    for host in route.get("virtual_hosts", []):
        for domain in host.get("domains", []):
            if domain.lower() in seen:
                return domain
            seen.add(domain.lower())
    return None


def inline_routes(listener: dict[str, Any], routes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A listener whose HTTP connection managers carry their route configuration instead of asking RDS."""
    result = without_log_files(untyped(copy.deepcopy(listener)))
    for chain in result.get("filter_chains", []):
        for item in chain.get("filters", []):
            manager = item.get("typed_config", {})
            rds = manager.pop("rds", None)
            if rds is not None:
                route = {k: v for k, v in routes.get(rds["route_config_name"], {}).items() if k != "@type"}
                manager["route_config"] = route or {"name": rds["route_config_name"]}
    return result


def without_log_files(listener: dict[str, Any]) -> dict[str, Any]:
    """The listener with its access logs writing to /dev/null.

    Validate mode opens every access log file, and a new proxy's directory does
    not exist before its apply succeeds; the files are the backend's own, not
    something a manifest decides, so they are not what is being checked here.
    """
    for chain in listener.get("filter_chains", []):
        for item in chain.get("filters", []):
            for log in item.get("typed_config", {}).get("access_log", []):
                if "path" in log.get("typed_config", {}):
                    log["typed_config"]["path"] = "/dev/null"
    return listener


WORKLOAD_SECRETS = (CERTIFICATE, ROOT)  # every proxy has its own; validation stands in for them


def static_secret_refs(value: Any) -> Any:
    """A copy naming its SDS secrets as static ones: validate mode opens no ADS stream to fetch them."""
    if isinstance(value, dict):
        return {k: static_secret_refs(v) for k, v in value.items() if k != "sds_config"}
    if isinstance(value, list):
        return [static_secret_refs(item) for item in value]
    return value


def validation_secrets() -> list[dict[str, Any]]:
    """Stand-ins for every proxy's "default" and "ROOTCA": only their shape matters to the check."""
    pair, root = throwaway_identity()
    return [{k: v for k, v in item.items() if k != "@type"} for item in secrets(pair, root)]


def absent_files(clusters: list[dict[str, Any]], present: set[str]) -> list[dict[str, Any]]:
    """Stand-ins for the origination files no proxy found: such a proxy waits for them (origination.py),
    which a static bootstrap cannot express; only the rest of the configuration is checked then."""
    certificate, root = validation_secrets()
    names = set()
    for cluster in clusters:
        names.update(re.findall(r"'name': '(file-(?:root|cert):[^']*)'", repr(cluster.get("transport_socket", {}))))
    return [
        {**(root if name.startswith("file-root:") else certificate), "name": name} for name in sorted(names - present)
    ]


def untyped(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource as a bootstrap field holds it (the type is the field's, not an Any's)."""
    return {k: v for k, v in resource.items() if k != "@type"}


def assemble(snapshots: dict[str, Snapshot]) -> dict[str, Any]:
    """One static bootstrap holding every proxy's resources; proxies own distinct addresses, so nothing clashes."""
    clusters, listeners = [], []
    credentials: dict[str, dict[str, Any]] = {}
    for proxy, snapshot in snapshots.items():
        if SECRET in snapshot:
            # Gateways' certificates from Secrets: their content is checked too (one Secret, one content).
            credentials.update(
                (name, untyped(item)) for name, item in snapshot[SECRET].items.items() if name not in WORKLOAD_SECRETS
            )
        routes = snapshot[ROUTE].items
        for cluster in snapshot[CLUSTER].items.values():
            clusters.append({**untyped(cluster), "name": f"{proxy}/{cluster['name']}"})
        for listener in snapshot[LISTENER].items.values():
            listeners.append({**inline_routes(listener, routes), "name": f"{proxy}/{listener['name']}"})
    static: dict[str, Any] = {"clusters": clusters, "listeners": listeners}
    if uses_secrets(clusters, listeners):
        secrets = validation_secrets() + list(credentials.values()) + absent_files(clusters, set(credentials))
        static = {**static_secret_refs(static), "secrets": secrets}
    # The proxies' own runtime layer (Istio's RE2 program-size limit): without it Envoy would judge
    # regexes by its default limit, not the one the proxies run with.
    return {"layered_runtime": runtime(), "static_resources": static}


class Validator:
    """Runs the checks, remembering the virtual hosts Envoy already accepted.

    A small apply on top of many VirtualServices changes one virtual host of
    a large route configuration: only hosts not yet accepted go to Envoy; the
    one rule that spans hosts (unique domains) is checked here.
    """

    def __init__(self, envoy_bin: str, work_dir: Path) -> None:
        self.envoy_bin = envoy_bin
        self.work_dir = work_dir
        self.accepted: set[bytes] = set()
        # id -> (host, its text): the backend hands unchanged hosts' JSON over as the same objects
        # (snapshots are never changed once made), so those are not encoded again for the lookup.
        self.texts: dict[int, tuple[dict[str, Any], bytes]] = {}

    def validate(self, snapshots: dict[str, Snapshot]) -> None:
        new_hosts: set[bytes] = set()
        trimmed: dict[str, Snapshot] = {}
        for proxy, snapshot in snapshots.items():
            routes = {}
            for name, route in snapshot[ROUTE].items.items():
                domain = duplicate_domain(route)
                if domain is not None:
                    raise ConfigRejected(proxy, f"two virtual hosts of route configuration {name} serve {domain}")
                hosts = []
                for host in route.get("virtual_hosts", []):
                    key = self.text(host)
                    if key not in self.accepted:
                        hosts.append(host)
                        new_hosts.add(key)
                routes[name] = {**route, "virtual_hosts": hosts}
            trimmed[proxy] = {**snapshot, ROUTE: Resources(snapshot[ROUTE].version, routes)}
        validate(trimmed, self.envoy_bin, self.work_dir)
        if len(self.accepted) > MAX_ACCEPTED_HOSTS:
            self.accepted.clear()
            self.texts.clear()
        self.accepted |= new_hosts

    def text(self, host: dict[str, Any]) -> bytes:
        known = self.texts.get(id(host))
        if known is not None and known[0] is host:
            return known[1]
        text = orjson.dumps(host)
        if len(self.texts) > MAX_ACCEPTED_HOSTS:
            self.texts.clear()
        self.texts[id(host)] = (host, text)
        return text


def validate(snapshots: dict[str, Snapshot], envoy_bin: str, work_dir: Path) -> None:
    """Raise ConfigRejected naming the proxy and Envoy's reason if Envoy would refuse any snapshot.

    One Envoy run for all; only when Envoy's reason names no resource are the
    proxies halved until the one it refuses is found.
    """
    detail = envoy_verdict(snapshots, envoy_bin, work_dir)
    if detail is None:
        return
    proxy = next((p for p in snapshots if f"{p}/" in detail), None)
    if proxy is None and len(snapshots) > 1:
        names = list(snapshots)
        half = {name: snapshots[name] for name in names[: len(names) // 2]}
        rest = {name: snapshots[name] for name in names[len(names) // 2 :]}
        validate(half, envoy_bin, work_dir)
        validate(rest, envoy_bin, work_dir)
    proxy = proxy or next(iter(snapshots))
    detail = detail.replace(f"{proxy}/", "")
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    raise ConfigRejected(proxy, detail)


def envoy_verdict(snapshots: dict[str, Snapshot], envoy_bin: str, work_dir: Path) -> str | None:
    """None if Envoy accepts the snapshots, else its reason."""
    if not snapshots:
        return None
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "validate.json"
    path.write_bytes(orjson.dumps(assemble(snapshots)))
    try:
        result = subprocess.run(
            [envoy_bin, "--mode", "validate", "-c", str(path), "-l", "critical", "--log-format", "%v"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        path.unlink(missing_ok=True)
    if result.returncode == 0:
        return None
    output = result.stderr + result.stdout
    found = REFUSAL.search(output)
    return found.group(1) if found else (output.strip().splitlines() or ["no reason given"])[-1]
