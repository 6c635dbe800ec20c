"""What `inv local.status` and `inv local.down` import: invoke, the state directory, supervisord, sockets.

The status of a running mesh is probed the same way in tests/test_cli_local.py.

Their speed target (at most 1.5x `inv --list` of an empty tasks.py) is measured
by `nox -s bench -- cli`; these tests pin its cause, which timing on a shared
machine cannot: the translation layers, gRPC and the Envoy API stay unloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meshy import ROOT

# Modules the status of a stopped mesh and down do not need (PyYAML itself is loaded by invoke's config).
HEAVY = (
    "meshy.local.backend",
    "meshy.local.build",
    "meshy.local.resources",
    "meshy.local.topology",
    "meshy.local.model",
    "meshy.local.envoy",
    "meshy.local.shapes",
    "meshy.local.routes",
    "meshy.local.xds.client",
    "meshy.local.xds.server",
    "grpc",
    "re2",
    "google.protobuf",
    "jinja2",
    "requests",
    "kubernetes",
    "supervisor.xmlrpc",
    "orjson",
)
# Runs invoke's own program as `inv ARGS` and reports, as it exits, which HEAVY modules were loaded.
PROBE = """
import atexit, json, sys
heavy = json.loads(sys.argv[1])
atexit.register(lambda: sys.stderr.write("LOADED " + json.dumps([m for m in heavy if m in sys.modules]) + "\\n"))
sys.argv = ["inv", *sys.argv[2:]]
from invoke.main import program
program.run()
"""


def loaded_by(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`inv ARGS` with only PATH and env set, and which HEAVY modules it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    line = next(line for line in result.stderr.splitlines() if line.startswith("LOADED "))
    return result, json.loads(line.removeprefix("LOADED "))


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("local.status",), 1, "the local mesh is not running"),
        (("local.status", "-o", "json"), 1, '"running": false'),
        (("local.down",), 0, "nothing was running"),
    ],
)
def test_status_and_down_without_a_mesh_import_no_translation_layer(tmp_path, args, code, says):
    result, loaded = loaded_by({"MESHY_STATE": str(tmp_path / "state")}, *args)
    assert result.returncode == code, result.stderr
    assert says in result.stdout + result.stderr
    assert loaded == []


def test_the_probe_sees_the_backend_when_a_task_needs_it(tmp_path):
    # local.up (dry) builds the whole backend: the probe must report its modules, or the tests above prove nothing.
    result, loaded = loaded_by({"MESHY_STATE": str(tmp_path / "state")}, "--dry", "local.up")
    assert result.returncode == 0, result.stderr
    assert {"meshy.local.backend", "meshy.local.build", "grpc"} <= set(loaded)
