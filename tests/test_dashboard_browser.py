"""The dashboard in a real browser (Debian's headless Chromium) while traffic flows through a real local mesh.

Each test leaves a screenshot in reports/local/ next to the scenarios' charts.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from meshy.bench import repeating
from meshy.dashboard import browser
from meshy.scenarios.runner import reports_dir
from tests.local_mesh import running

SERVICE = "service:minimal-service.default.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    browser.chromium()  # a missing browser is a failure with the fix, never a skip
    with running(tmp_path_factory.mktemp("dashboard") / "state") as mesh_up:
        yield mesh_up


def rendered(url: str, tries: int = 3) -> str:
    """The DOM once the page's script drew the graph; on a loaded machine a first load can run out of time."""
    for _ in range(tries):
        dom = browser.dump_dom(url)
        if "data-nodes=" in dom:
            return dom
    raise AssertionError(f"the dashboard's script drew no graph in {tries} loads of {url}")


def edge_rows(dom: str) -> list[list[str]]:
    table = dom[dom.index('<table id="edges">') :]
    table = table[: table.index("</table>")]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r'<tr class="edge">(.*?)</tr>', table)]


def test_graph_shows_the_versioned_split_with_and_without_javascript(mesh):
    mesh.backend.remove_selector_label("minimal-service", "version")
    mesh.apply_template("istio/minimal-destinationrule.yaml.j2")
    mesh.apply_template("istio/minimal-virtualservice-split.yaml.j2")
    url = mesh.backend.layout.dashboard_url + "/"
    with repeating(mesh.get):
        graph = requests.get(url + "graph.json", timeout=5, proxies={"http": ""}).json()
        while sum(e["requests"] for e in graph["edges"] if e["source"] == SERVICE) < 200:
            graph = requests.get(url + "graph.json", timeout=5, proxies={"http": ""}).json()
        dom = rendered(url)
        browser.screenshot(url, reports_dir("local") / "browser-test-split.png")
    # Cytoscape.js drew the graph: ingress gateway, the service, both versions and their app box.
    nodes, edges = (int(re.search(rf'data-{k}="(\d+)"', dom).group(1)) for k in ("nodes", "edges"))
    assert nodes >= 5 and edges >= 3
    rows = {(row[0], row[1]): row for row in edge_rows(dom)}
    v1, v2 = rows[("minimal-service", "minimal-service v1")], rows[("minimal-service", "minimal-service v2")]
    shares = [int(row[4].rstrip("%")) for row in (v1, v2)]
    # The split VirtualService sends 50/50: 200+ calls land within 40-60% each (99.9% interval is +-12%).
    assert sum(shares) in (99, 100, 101) and all(38 <= share <= 62 for share in shares), shares
    assert re.fullmatch(r"\d+\.\d ms", v1[6]) and float(v1[3]) > 0
    # The test's client is outside the mesh: it enters at the ingress gateway as "unknown", as in Kiali.
    entry = rows[("unknown", "istio-ingressgateway")]
    assert int(entry[2]) >= int(v1[2]) + int(v2[2]) and entry[4] == "100%"
    # Without JavaScript the same edges are a static table.
    static = browser.dump_dom(url, javascript=False)
    assert "data-nodes" not in static
    assert {(row[0], row[1]) for row in edge_rows(static)} >= {("minimal-service", "minimal-service v2")}


def test_retries_show_as_attempts_on_the_callers_edge(mesh):
    mesh.apply_template("istio/bounced-virtualservice-retries.yaml.j2")
    url = mesh.backend.layout.dashboard_url + "/"
    try:
        with repeating(lambda: mesh.bounce("http://bounced-service:9090/")):
            rows: list[list[str]] = []
            deadline = time.monotonic() + 120
            while not rows or int(rows[0][2]) < 30:
                assert time.monotonic() < deadline, (
                    "30 calls never showed on the minimal-service -> bounced-service edge"
                )
                rows = [r for r in edge_rows(rendered(url)) if r[:2] == ["minimal-service v1", "bounced-service"]]
            browser.screenshot(url, reports_dir("local") / "browser-test-retries.png")
    finally:
        mesh.delete_template("istio/bounced-virtualservice-retries.yaml.j2")
    calls, attempts = int(rows[0][2]), int(rows[0][8])
    # 70% of attempts fail: about 3.3 attempts per call; for 30+ calls the 99.9% interval is within 1.6-5.1.
    assert 1.6 <= attempts / calls <= 5.1, (calls, attempts)
    assert "svg" in requests.get(url + "series/codes.svg", timeout=5, proxies={"http": ""}).text
