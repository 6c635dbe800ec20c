"""Headless Chromium (Debian's `chromium` package) looking at the dashboard: the DOM after its scripts ran, a screenshot."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from meshy.errors import MeshyError

# Long enough for the page's first refresh (fetches, layout).
SCRIPT_BUDGET_MS = 4000
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# What the dashboard's script sets once it drew the graph (dashboard.js).
GRAPH_DRAWN = "document.querySelector('#graph[data-nodes]') !== null"
TIMEOUT = 90


class BrowserError(MeshyError, RuntimeError):
    pass


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no headless Chromium on PATH; install it with apt-get install chromium (.ci/run does).")


def run(url: str, *options: str, javascript: bool = True) -> str:
    with tempfile.TemporaryDirectory(prefix="meshy-chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--no-proxy-server",
            "--window-size=1280,1000",
            # Without scripts nothing needs time to run, and the page's <noscript> refresh must not fire first.
            *(
                [f"--virtual-time-budget={SCRIPT_BUDGET_MS}"]
                if javascript
                else ["--blink-settings=scriptEnabled=false"]
            ),
            *options,
            url,
        ]
        process = started(command, capture=True)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            end_group(process)
    if process.returncode != 0:
        raise BrowserError(f"chromium failed on {url} (exit {process.returncode}): {stderr.strip()[-300:]}")
    return stdout


def started(command: list[str], capture: bool = False) -> subprocess.Popen:
    """Chromium in a process group of its own: its helpers (renderer, crash handler) end with it. It is
    killed when this process dies, even by SIGKILL: a Browser stays open through a whole demo."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    # Looked up here, not in the child: between fork and exec it only makes the call (Linux prctl).
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        # The kernel sends SIGKILL when the thread that started it ends: scenarios run on the main thread.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return subprocess.Popen(
        command, stdout=output, stderr=output, text=True, start_new_session=True, preexec_fn=die_with_parent
    )


def end_group(process: subprocess.Popen) -> None:
    """Stop Chromium and every helper it started, and wait until none is left.

    Its helpers outlive the main process for a moment and keep writing into the
    profile directory, which then cannot be removed (seen in CI)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            break
        time.sleep(0.02)
    process.wait(timeout=10)


def dump_dom(url: str, javascript: bool = True) -> str:
    """The page's DOM after its scripts ran, or as served when JavaScript is off."""
    if javascript:
        return run(url, "--dump-dom")
    # Chromium's --dump-dom needs scripting; with it off, read the DOM over the DevTools protocol instead.
    return dom_without_scripts(url)


def dom_without_scripts(url: str) -> str:
    with Browser(javascript=False) as chrome:
        session = chrome.load(url)
        root = session.call("DOM.getDocument")["root"]["nodeId"]
        return session.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]


class Browser:
    """One headless Chromium driven over DevTools, kept open across page loads: starting one costs about
    2 s on 2 cores, a screenshot through an open one a fraction of that (a demo takes sixteen)."""

    def __init__(self, javascript: bool = True) -> None:
        self.javascript = javascript
        self.profile: tempfile.TemporaryDirectory | None = None
        self.process: subprocess.Popen | None = None
        self.socket = None
        self.session: DevTools | None = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Browser:
        import websocket  # websocket-client

        self.profile = tempfile.TemporaryDirectory(prefix="meshy-chromium-")
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={self.profile.name}"]
        command += ["--no-proxy-server", "--window-size=1280,1000", "--remote-debugging-port=0", "about:blank"]
        try:
            self.process = started(command)
            port_file = Path(self.profile.name) / "DevToolsActivePort"
            deadline = time.monotonic() + TIMEOUT
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise BrowserError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port = port_file.read_text().split()[0]
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5, proxies={"http": ""}).json()
            page = next(t for t in targets if t.get("type") == "page")
            self.socket = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=TIMEOUT, suppress_origin=True
            )
            self.session = DevTools(self.socket)
            # The page's size, as --window-size gives a command-line screenshot (the window's frame aside).
            self.session.call(
                "Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False
            )
            if not self.javascript:
                self.session.call("Emulation.setScriptExecutionDisabled", value=True)
            self.session.call("Page.enable")
        except BaseException as error:
            self.close()
            if isinstance(error, Exception) and not isinstance(error, BrowserError):
                # requests' and websocket-client's errors, or no page target: the browser is unusable.
                raise BrowserError(f"chromium's DevTools did not answer: {error!r}") from error
            raise
        return self

    def load(self, url: str) -> DevTools:
        """Navigate and wait for the load event; the session, for reading the page."""
        if self.session is None:
            raise BrowserError("the browser is not started")
        self.session.events.clear()
        self.session.call("Page.navigate", url=url)
        self.session.wait_event("Page.loadEventFired")
        return self.session

    def screenshot(self, url: str, path: Path, ready: str = GRAPH_DRAWN) -> Path:
        """A PNG of the page once the JavaScript expression `ready` holds (or SCRIPT_BUDGET_MS passed: the
        picture then shows what the page shows)."""
        session = self.load(url)
        deadline = time.monotonic() + SCRIPT_BUDGET_MS / 1000
        while time.monotonic() < deadline:
            found = session.call("Runtime.evaluate", expression=ready, returnByValue=True)
            if found.get("result", {}).get("value") is True:
                break
            time.sleep(0.05)
        data = session.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                self.socket.close()
        if self.process is not None:
            end_group(self.process)
        if self.profile is not None:
            self.profile.cleanup()
        self.socket = self.session = self.process = self.profile = None


class DevTools:
    """Request/response over one DevTools websocket; events seen while waiting are kept."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.next_id = 0
        self.events: list[str] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.exchange(lambda: self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params})))
        while True:
            message = self.receive()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message["method"])

    def wait_event(self, method: str) -> None:
        while method not in self.events:
            message = self.receive()
            if "method" in message:
                self.events.append(message["method"])

    def receive(self) -> dict:
        return json.loads(self.exchange(self.socket.recv))

    @staticmethod
    def exchange(step):
        # websocket-client raises its own types (timeouts, a closed connection) beside OSError: a browser
        # that died or hangs is a BrowserError like any other.
        try:
            return step()
        except Exception as error:
            raise BrowserError(f"chromium's DevTools connection failed: {error!r}") from error


def screenshot(url: str, path: Path) -> Path:
    """A PNG of the page in a browser of its own (Browser.screenshot for several)."""
    with Browser() as chrome:
        return chrome.screenshot(url, path)
