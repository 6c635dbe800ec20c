"""Headless Chromium (Debian's `chromium` package) looking at the dashboard: the DOM after its scripts ran, a screenshot."""

from __future__ import annotations

import contextlib
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

# Long enough for the page's first refresh (fetches, layout) in virtual time.
SCRIPT_BUDGET_MS = 4000
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
    """Chromium in a process group of its own: its helpers (renderer, crash handler) end with it."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(command, stdout=output, stderr=output, text=True, start_new_session=True)


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
    import websocket  # websocket-client

    with tempfile.TemporaryDirectory(prefix="meshy-chromium-") as profile:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
        command += ["--no-proxy-server", "--remote-debugging-port=0", "about:blank"]
        process = started(command)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + TIMEOUT
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise BrowserError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port = port_file.read_text().split()[0]
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5, proxies={"http": ""}).json()
            page = next(t for t in targets if t.get("type") == "page")
            socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=TIMEOUT, suppress_origin=True)
            try:
                session = DevTools(socket)
                session.call("Emulation.setScriptExecutionDisabled", value=True)
                session.call("Page.enable")
                session.call("Page.navigate", url=url)
                session.wait_event("Page.loadEventFired")
                root = session.call("DOM.getDocument")["root"]["nodeId"]
                return session.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]
            finally:
                socket.close()
        finally:
            end_group(process)


class DevTools:
    """Request/response over one DevTools websocket; events seen while waiting are kept."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.next_id = 0
        self.events: list[str] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message["method"])

    def wait_event(self, method: str) -> None:
        while method not in self.events:
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message["method"])


def screenshot(url: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    run(url, f"--screenshot={path}")
    if not path.exists():
        raise BrowserError(f"chromium wrote no screenshot to {path}")
    return path
