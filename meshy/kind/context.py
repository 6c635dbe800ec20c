"""How the cluster path runs commands: one code path for real and dry runs.

Every step builds argv lists and hands them to a runner. The real runner
executes them; under `inv --dry` the printing runner writes each one as a line
of the plan and answers as if nothing existed yet. Nothing else differs, so
the dry plan is the list of commands a run on a fresh machine executes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from meshy.console import Console
from meshy.download import cache_dir
from meshy.errors import MeshyError
from meshy.net import port_in_use
from meshy.render import Ports, RenderOptions, build_dir
from meshy.versions import Pair


class ClusterError(MeshyError, RuntimeError):
    """The cluster path cannot go on; the message names the cause and the fix."""


REGISTRY = "kind-registry"
EXTERNAL = "minimal-external"
IMAGE = "minimal-service:v1.0.0"

Command = Sequence[str] | str


@dataclass(frozen=True)
class Completed:
    exited: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    def __call__(self, argv: list[str], stdin: str | None, capture: bool) -> Completed: ...


def argv_of(command: Command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def show(argv: list[str]) -> str:
    return shlex.join(argv)


class ShellRunner:
    """Runs commands for real; uncaptured output goes straight to the terminal."""

    def __call__(self, argv: list[str], stdin: str | None, capture: bool) -> Completed:
        try:
            # No input: the command must not read the caller's terminal or pipe.
            feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
            result = subprocess.run(argv, text=True, capture_output=capture, **feed)
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: command not found")
        return Completed(result.returncode, result.stdout or "", result.stderr or "")


@dataclass
class PrintRunner:
    """`inv --dry`: prints each command as a plan line and answers as if nothing existed."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)

    def __call__(self, argv: list[str], stdin: str | None, capture: bool) -> Completed:
        print(show(argv), file=self.stream, flush=True)
        if stdin is not None:
            print(f"#   stdin: {stdin_summary(stdin)}", file=self.stream, flush=True)
        return Completed(0)


def stdin_summary(text: str) -> str:
    """What a manifest on stdin holds, e.g. "VirtualService/bounced-service, ConfigMap/local-registry-hosting"."""
    found = re.findall(r"^kind: (\w+)\nmetadata:\n  name: ([\w.-]+)", text, re.M)
    return ", ".join(f"{kind}/{name}" for kind, name in found) or f"{len(text)} bytes"


@dataclass
class Env:
    """What every step needs: the pair, a runner, options and output."""

    pair: Pair
    console: Console
    runner: Runner
    dry: bool = False
    options: RenderOptions = field(default_factory=RenderOptions)
    cache: Path = field(default_factory=cache_dir)

    @property
    def build(self) -> Path:
        return build_dir(self.pair)

    @property
    def ports(self) -> Ports:
        return self.options.ports

    @property
    def context(self) -> str:
        return f"kind-{self.pair.cluster_name}"

    def kubectl(self, *args: str) -> list[str]:
        return ["kubectl", "--context", self.context, *args]

    def run(self, command: Command, stdin: str | None = None, absent: tuple[str, ...] = ()) -> bool:
        """A command that changes something; False when it found nothing to act on (one of `absent` in stderr).

        Any other failure stops the task with the command named.
        """
        argv = argv_of(command)
        result = self.runner(argv, stdin, capture=bool(absent))
        if result.exited == 0:
            if absent and result.stdout:
                print(result.stdout, end="" if result.stdout.endswith("\n") else "\n")
            return True
        if absent and matches(result.stderr, absent):
            return False
        raise ClusterError(f"`{show(argv)}` failed with exit code {result.exited}{reason(result)}")

    def query(self, command: Command, absent: tuple[str, ...] = ()) -> str:
        """A read-only command's output; empty when what it asks about is absent (one of `absent` in stderr).

        A failed query is not an absence: any other failure stops the task.
        """
        argv = argv_of(command)
        result = self.runner(argv, None, capture=True)
        if result.exited == 0:
            return result.stdout.strip()
        if absent and matches(result.stderr, absent):
            return ""
        raise ClusterError(f"`{show(argv)}` failed with exit code {result.exited}{reason(result)}")

    def done(self, message: str) -> None:
        self.console.info(f" ✓ {message} (already done, nothing changed)")


def matches(stderr: str, patterns: tuple[str, ...]) -> bool:
    lowered = stderr.lower()
    return any(pattern.lower() in lowered for pattern in patterns)


def reason(result: Completed) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return f" ({lines[-1]}); fix that and retry." if lines else "; see its output above."


TOOL_HINTS = {
    "docker": "install Docker and start it",
    "kind": "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
    "kubectl": "install kubectl",
}


def require_tools(env: Env, *tools: str) -> None:
    """Each tool on PATH (not checked under --dry), and a Docker daemon that answers."""
    if not env.dry:
        for tool in tools:
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} is not on PATH; {TOOL_HINTS.get(tool, f'install {tool}')}.")
    if "docker" in tools:
        result = env.runner(["docker", "info", "--format", "{{.ServerVersion}}"], None, capture=True)
        if result.exited != 0:
            raise ClusterError("Docker is not running (docker info failed); start the Docker daemon and retry.")


def require_free_ports(env: Env, ports: dict[str, int]) -> None:
    if env.dry:
        return
    for what, port in ports.items():
        if port_in_use("127.0.0.1", port):
            raise ClusterError(f"port {port} ({what}) is already in use on 127.0.0.1; stop what uses it and retry.")
