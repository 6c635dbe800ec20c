"""The push path: ADS from the mesh's xDS server, ACK/NACK, validation by Envoy, persistence.

Real Envoy proxies and a real xDS server under supervisord (tests/local_mesh.Mesh).
"""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import stat
from pathlib import Path

import orjson
import pytest
import requests

from meshy.local import envoy, topology
from meshy.local.backend import NO_PROXY, LocalError, envoy_binary, proxy_snapshot
from meshy.local.build import Inputs, build_mesh
from meshy.local.identity import MeshCA
from meshy.local.resources import ResourceSet, parse_documents
from meshy.local.xds.client import XdsClient
from meshy.local.xds.control import MAX_SOCKET_PATH, socket_path
from meshy.local.xds.encode import Encoder, to_any
from meshy.local.xds.snapshot import LISTENER, ROUTE, Resources, snapshot_from_json
from meshy.local.xds.validate import ConfigRejected, Validator, validate
from meshy.net import free_port, wait_until
from meshy.render import render
from tests.local_mesh import Mesh, running
from tests.test_local_live import vs

GOLDEN_IN = Path(__file__).parent / "testdata" / "local" / "in"
INGRESS = "istio-ingressgateway"
# Python's re accepts a look-behind; Envoy's RE2 does not.
RE2_REFUSES = "(?<=a)b"


def gateway_vs(rule: str) -> str:
    """The walkthrough's gateway VirtualService with one rule (`rule` precedes its route)."""
    return vs(f"  - {rule}\n    route: [{{destination: {{host: minimal-service}}}}]")


# A response header shows the change arriving.
HEADER_VS = gateway_vs('headers: {response: {set: {x-pushed: "yes"}}}')


def golden_snapshots(case: str, ca_dir: Path) -> dict:
    text = (GOLDEN_IN / "_workloads.yaml").read_text() + "\n---\n" + (GOLDEN_IN / f"{case}.yaml").read_text()
    resources = ResourceSet().applied(parse_documents(text, case))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    mesh = build_mesh(Inputs(resources, pods, topology.gateways(layout), {}))
    ca = MeshCA(ca_dir)
    return {name: proxy_snapshot(proxy, Path("/meshy/envoy") / name, ca) for name, proxy in mesh.proxies.items()}


def with_bad_regex(snapshot: dict) -> dict:
    """The snapshot with its first route's match replaced by a regex Envoy refuses."""
    broken = copy.deepcopy(snapshot)
    routes = broken[ROUTE].items
    first = next(iter(routes.values()))
    first["virtual_hosts"][0]["routes"][0]["match"] = {"safe_regex": {"regex": RE2_REFUSES}}
    broken[ROUTE] = Resources.of(list(routes.values()))
    return broken


# --- without a mesh --------------------------------------------------------------


def test_socket_lives_in_the_state_directory_unless_the_path_is_too_long(tmp_path):
    assert socket_path(tmp_path) == tmp_path / "xds.sock"
    deep = tmp_path / ("d" * 120)
    short = socket_path(deep)
    assert short.parent == Path("/tmp") and len(str(short)) <= MAX_SOCKET_PATH
    assert socket_path(deep) == short and socket_path(tmp_path / ("e" * 120)) != short


def test_envoy_accepts_the_generated_configuration(tmp_path):
    snapshots = golden_snapshots("gateway-routing", tmp_path / "pki")
    assert len(snapshots) >= 3
    validate(snapshots, envoy_binary(), tmp_path)


def test_envoy_refusal_names_the_proxy_and_its_reason(tmp_path):
    snapshots = golden_snapshots("gateway-routing", tmp_path / "pki")
    victim = sorted(snapshots)[-1]
    snapshots[victim] = with_bad_regex(snapshots[victim])
    with pytest.raises(ConfigRejected) as refused:
        validate(snapshots, envoy_binary(), tmp_path)
    assert refused.value.proxy == victim
    assert "(?<=" in refused.value.detail  # RE2's reason quotes the operator
    assert [p.name for p in tmp_path.iterdir()] == ["pki"]  # the assembled file does not stay behind


def test_encoder_reusing_virtual_hosts_gives_the_same_message(tmp_path):
    encoder = Encoder()
    routes = [
        r for snap in golden_snapshots("gateway-routing", tmp_path / "pki").values() for r in snap[ROUTE].items.values()
    ]
    assert any(len(r["virtual_hosts"]) > 1 for r in routes)
    # Imported here: meshy.local.xds (imported above) is what makes the generated API importable.
    from envoy.config.route.v3 import route_pb2

    for route in routes + routes:  # the second round comes from the remembered hosts
        fresh, reused = route_pb2.RouteConfiguration(), route_pb2.RouteConfiguration()
        fresh.ParseFromString(to_any(route).value)
        reused.ParseFromString(encoder.to_any(route).value)
        assert reused == fresh and reused.virtual_hosts
    assert len(encoder.hosts) == len({orjson.dumps(h) for r in routes for h in r["virtual_hosts"]})


def test_validator_sends_only_new_hosts_and_checks_domains_across_them(tmp_path):
    validator = Validator(envoy_binary(), tmp_path)
    snapshots = golden_snapshots("gateway-routing", tmp_path / "pki")
    validator.validate(snapshots)
    accepted = set(validator.accepted)
    assert accepted
    ingress = snapshots[INGRESS]
    route_name, route = next((n, r) for n, r in ingress[ROUTE].items.items() if r["virtual_hosts"])
    # A new host that is bad is still judged by Envoy, and not remembered.
    broken = with_bad_regex(ingress)
    with pytest.raises(ConfigRejected, match=re.escape("(?<=")):
        validator.validate({INGRESS: broken})
    assert validator.accepted == accepted
    # Two hosts with one domain: each alone is fine, together Envoy would refuse them.
    twin = {**route["virtual_hosts"][0], "name": "twin"}
    doubled = {**route, "virtual_hosts": route["virtual_hosts"] + [twin]}
    clash = {**ingress, ROUTE: Resources.of([doubled])}
    with pytest.raises(ConfigRejected, match=f"{route_name} serve"):
        validator.validate({INGRESS: clash})


def test_bootstrap_points_ads_at_the_socket_and_watches_no_file(tmp_path):
    snapshot = golden_snapshots("gateway-routing", tmp_path / "pki")
    assert snapshot
    resources = ResourceSet().applied(parse_documents((GOLDEN_IN / "_workloads.yaml").read_text(), "w"))
    layout = topology.Layout()
    pods, _ = topology.pods(resources, {}, layout)
    proxy = build_mesh(Inputs(resources, pods, topology.gateways(layout), {})).proxies[INGRESS]
    text = orjson.dumps(envoy.bootstrap(proxy, tmp_path / "xds.sock", tmp_path / "admin.sock")).decode()
    assert "path_config_source" not in text and "watched_directory" not in text
    assert f'"pipe":{{"path":"{tmp_path / "xds.sock"}"}}' in text
    assert '"node":{"id":"istio-ingressgateway"' in text


# --- on a live mesh -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running(tmp_path_factory.mktemp("xds") / "state") as m:
        yield m


def update_counts(mesh: Mesh) -> dict[str, int]:
    """Per proxy, how many configuration updates (of any xDS type) it took."""
    names = [pod.name for pod in mesh.backend.pods()] + [INGRESS, "istio-egressgateway"]
    counts = {}
    for name in names:
        stats = mesh.backend.proxy_stats(name)
        counts[name] = sum(v for k, v in stats.items() if k.endswith("update_success") and ("ds." in k))
    return counts


def fresh_status(mesh: Mesh) -> int | None:
    """The ingress's answer on a new connection, None if nothing listens."""
    try:
        return requests.get(
            mesh.backend.ingress_url, headers={"Host": "minimal.svc.kind.org"}, timeout=5, proxies=NO_PROXY
        ).status_code
    except requests.ConnectionError:
        return None


def good_snapshot(mesh: Mesh, proxy: str) -> dict:
    saved = orjson.loads(mesh.backend.xds_state.read_bytes())
    return snapshot_from_json(saved[proxy])


def test_socket_is_owner_only(mesh):
    mode = os.stat(mesh.backend.xds_socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def inotify_watchers(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd) == "anon_inode:inotify")


def test_proxies_hold_no_file_watch(mesh):
    # Four inotify instances per Envoy hit the default 128 per user at about 30 pods.
    envoys = [p for p in mesh.backend.supervisor.processes() if p.name.startswith("proxy_")]
    assert len(envoys) == 5
    assert {p.name: inotify_watchers(p.pid) for p in envoys} == {p.name: 0 for p in envoys}


def test_only_changed_proxies_receive_a_push(mesh):
    before = update_counts(mesh)
    mesh.apply(HEADER_VS)
    assert mesh.get().headers.get("x-pushed") == "yes"
    after = update_counts(mesh)
    assert after[INGRESS] > before[INGRESS]
    unchanged = {name for name in before if name != INGRESS}
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}
    mesh.apply_template("istio/minimal-virtualservice.yaml.j2")
    assert "x-pushed" not in mesh.get().headers


def test_nack_carries_envoys_reason_and_the_last_good_config_returns(mesh):
    good = good_snapshot(mesh, INGRESS)
    client = XdsClient(mesh.backend.xds_socket)
    try:
        # Straight to the server, past the validation an apply does: the proxy itself refuses.
        client.update({INGRESS: with_bad_regex(good)})
        outcome = client.wait([INGRESS], 20)
        assert set(outcome.nacked) == {INGRESS}
        assert "(?<=" in outcome.nacked[INGRESS]
        client.revert([INGRESS])
        outcome = client.wait([INGRESS], 20)
        assert not outcome.nacked and not outcome.pending
    finally:
        client.close()
    assert mesh.get().status_code == 200
    assert good_snapshot(mesh, INGRESS)[ROUTE].version == good[ROUTE].version


def test_apply_envoy_would_refuse_is_refused_and_traffic_is_unchanged(mesh):
    bad = gateway_vs(f'match: [{{uri: {{regex: "{RE2_REFUSES}"}}}}]')
    before = update_counts(mesh)
    with pytest.raises((LocalError, ValueError)) as refused:
        mesh.apply(bad)
    assert "(?<=" in str(refused.value)
    assert len(str(refused.value)) < 300
    assert update_counts(mesh) == before
    assert mesh.get().status_code == 200


def test_gateway_port_taken_by_another_program_is_refused_before_anything_changes(mesh):
    layout = mesh.backend.layout
    port = free_port()
    gateway = f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: extra-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http-extra, protocol: HTTP}}
    hosts: ["*.extra.kind.org"]
"""
    with socket.socket() as holder:
        holder.bind((layout.gateway_ip(0), port))
        holder.listen()
        with pytest.raises(LocalError, match=f"{layout.gateway_ip(0)}:{port}.*already uses"):
            mesh.apply(gateway)
    assert "extra-gateway" not in str(mesh.backend.load().resources.to_list())
    assert mesh.get().status_code == 200
    assert mesh.apply(gateway) == ["Gateway default/extra-gateway created"]
    mesh.delete(gateway)


def test_deleted_then_recreated_gateway_host_works_on_the_first_apply(mesh):
    text = (
        render("istio/services-gateway.yaml.j2", mesh.pair)
        + "\n---\n"
        + render("istio/minimal-virtualservice.yaml.j2", mesh.pair)
    )
    mesh.delete(text)
    # The listener is gone (open connections drain; a new one finds nothing).
    assert fresh_status(mesh) is None
    assert not good_snapshot(mesh, INGRESS)[LISTENER].items
    assert not good_snapshot(mesh, INGRESS)[ROUTE].items
    mesh.apply(text)
    assert fresh_status(mesh) == 200


def test_restarted_server_and_proxy_get_the_last_good_config(mesh):
    rpc = mesh.backend.supervisor.rpc().supervisor
    for program in ("xds", f"proxy_{INGRESS}"):
        pid = rpc.getProcessInfo(program)["pid"]
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda p=program, old=pid: rpc.getProcessInfo(p)["pid"] not in (0, old), timeout=20)
    assert wait_until(lambda: mesh.get().status_code == 200, timeout=20)
    assert good_snapshot(mesh, INGRESS)[LISTENER].items
    # The restarted server takes the next apply, and the restarted proxy acknowledges it.
    mesh.apply(HEADER_VS)
    assert mesh.get().headers.get("x-pushed") == "yes"
    mesh.apply_template("istio/minimal-virtualservice.yaml.j2")
