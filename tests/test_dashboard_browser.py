"""The dashboard in a real browser (Debian's headless Chromium) while traffic flows through a real local mesh.

Each test leaves a screenshot in reports/local/ next to the scenarios' charts.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from meshy import ROOT
from meshy.bench import repeating
from meshy.dashboard import browser
from meshy.local.supervisor import alive
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


PAGE = b"""<html><body><div id="graph"></div><script>
setTimeout(() => { document.body.style.background = "rgb(255, 0, 0)"; document.getElementById("graph").dataset.nodes = 1; }, 600);
</script></body></html>"""


@pytest.fixture
def page_url():
    """A page whose script marks its graph drawn (as dashboard.js does) 0.6 s after it loaded."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()


def test_one_browser_takes_each_screenshot_once_the_graph_is_drawn(page_url, tmp_path):
    with browser.Browser() as chrome:
        shots = [chrome.screenshot(page_url, tmp_path / f"{index}.png") for index in range(2)]
        pid = chrome.process.pid
    for shot in shots:
        png = shot.read_bytes()
        assert png.startswith(b"\x89PNG") and struct.unpack(">II", png[16:24]) == (1280, 1000)
        # The script's red background shows: the picture was taken after it ran, not at the load event.
        assert (255, 0, 0) in pixels(shot)
    assert not alive(pid)


def test_a_browser_ends_with_the_process_that_started_it_even_on_sigkill(page_url, tmp_path):
    pid_file = tmp_path / "chromium.pid"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib; from meshy.dashboard import browser; "
            "chrome = browser.Browser().start(); chrome.screenshot(sys.argv[1], pathlib.Path(sys.argv[2]) / 'x.png'); "
            "pathlib.Path(sys.argv[2], 'chromium.pid').write_text(f'{chrome.process.pid} {chrome.profile.name}'); "
            "time.sleep(120)",
            page_url,
            str(tmp_path),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline and owner.poll() is None, "the owner never opened its browser"
            time.sleep(0.1)
        pid, profile = pid_file.read_text().split()
        chromium_pid = int(pid)
        assert alive(chromium_pid)
    finally:
        owner.kill()
        owner.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(chromium_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(chromium_pid)
    # Its helpers (renderer, GPU, zygote, crash handlers: every process naming its profile) notice the
    # browser's end a few seconds later.
    deadline = time.monotonic() + 30
    while (left := using(profile)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


def using(profile: str) -> list[str]:
    """The processes whose command line names the browser profile directory."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if profile.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def pixels(path: Path) -> set[tuple[int, int, int]]:
    from matplotlib import image

    data = image.imread(str(path))
    return {tuple(int(round(255 * c)) for c in pixel[:3]) for pixel in data[::100, ::100].reshape(-1, data.shape[2])}
