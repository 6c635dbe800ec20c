"""The task runner as a user runs it: `inv ...` in a subprocess, exit codes and one-line errors."""

from __future__ import annotations

import importlib
import inspect
import io
import json
import os
import pkgutil
import subprocess
import sys

import pytest

import meshy
from meshy import ROOT
from meshy.console import Console
from meshy.errors import MeshyError


def inv(
    *args: str, env: dict[str, str] | None = None, program: str = "invoke", **kwargs
) -> subprocess.CompletedProcess:
    """`inv ARGS` (invoke's own program, or meshy's: the one scripts/run calls inv)."""
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def test_list_documents_every_task():
    out = inv("--list").stdout
    for name in [
        "up",
        "down",
        "demo",
        "cluster.up",
        "istio.install",
        "addons.install",
        "local.apply",
        "scenario.traffic-shift",
    ]:
        assert f"  {name} " in out


def test_help_of_a_task_explains_options():
    out = inv("--help", "scenario.retries").stdout
    assert "--backend" in out and "local (default" in out and "--k8s" in out


def test_dry_up_prints_the_plan_without_touching_anything():
    result = inv("--dry", "up", "--k8s", "1.19", "--istio", "1.8")
    assert result.returncode == 0, result.stderr
    assert "kind create cluster --name kube-meshy-1-19" in result.stdout
    assert (
        "kubectl --context kind-kube-meshy-1-19 label namespace default istio-injection=enabled --overwrite"
        in result.stdout
    )


def test_unsupported_pair_is_one_clear_error():
    result = inv("--dry", "up", "--k8s", "1.19", "--istio", "1.30")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: Istio 1.30 supports Kubernetes 1.32 to 1.36, not 1.19: choose one of the matrix pairs "
        "(--k8s 1.19 --istio 1.8, --k8s 1.34 --istio 1.28, --k8s 1.36 --istio 1.30)."
    ]


def test_missing_manifest_is_one_clear_error(tmp_path):
    result = inv("local.apply", "-f", str(tmp_path / "nope.yaml"), env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: cannot read {tmp_path / 'nope.yaml'} (No such file or directory); pass an existing YAML file with -f."
    )


def test_unknown_backend_is_refused(tmp_path):
    result = inv("scenario.gateway", "--backend", "minikube", env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert "--backend 'minikube' is not known; use local or kind." in result.stderr


def project_errors() -> list[type[BaseException]]:
    """Every exception class defined in the meshy package."""
    found = []
    for module_info in pkgutil.walk_packages(meshy.__path__, "meshy."):
        if module_info.name in ("meshy.__main__",):
            continue  # running it starts the program
        module = importlib.import_module(module_info.name)
        found += [
            value
            for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
        ]
    return found


def test_every_project_error_derives_from_the_one_base_class():
    errors = project_errors()
    names = {error.__name__ for error in errors}
    # The ones the issue names, so the walk above cannot pass by finding nothing.
    assert {"TaskError", "VersionError", "LocalError", "ResourceError", "ClusterError", "DownloadError"} <= names
    assert {"ScenarioError", "SupervisorError", "BuildError", "InputError"} <= names
    assert [e.__name__ for e in errors if not issubclass(e, MeshyError)] == []


def test_version_errors_name_only_what_was_asked():
    result = inv("--dry", "up", "--k8s", "1.20")
    assert result.returncode == 1
    assert result.stderr.startswith("error: No version pair has Kubernetes 1.20: choose one of the matrix pairs (")
    assert "None" not in result.stderr


def test_kind_scenario_without_docker_is_one_line(tmp_path):
    # A PATH with Python but no docker, kind or kubectl: the check before any docker command answers.
    result = inv("scenario.retries", "--backend", "kind", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: docker is not on PATH; install Docker and start it."]


def test_every_short_flag_means_one_option_everywhere():
    sys.path.insert(0, str(ROOT))
    import tasks

    meanings: dict[str, set[str]] = {}
    for name in tasks.namespace.task_names:
        for argument in tasks.namespace[name].get_arguments():
            for short in [n for n in argument.names if len(n) == 1]:
                meanings.setdefault(short, set()).add(argument.name)
    assert meanings  # -f, -k, ... exist at all
    assert {short: names for short, names in meanings.items() if len(names) > 1} == {}
    assert meanings["f"] == {"file"} and meanings["i"] == {"istio"}


def test_short_pair_flags_reach_pre_tasks_too():
    from meshy.tasks.common import export_pair_options

    environ: dict[str, str] = {}
    export_pair_options(["inv", "services.deploy", "-k", "1.19", "-i", "1.8"], environ)
    assert environ == {"MESHY_K8S": "1.19", "MESHY_ISTIO": "1.8"}


def test_short_flags_on_the_command_line():
    assert "-i STRING, --istio=STRING" in inv("--help", "local.up").stdout
    logs_help = inv("--help", "local.logs").stdout
    options = logs_help.split("Options:")[1]
    assert "  --ingress=STRING" in options and "-i " not in options and "-n " not in options


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("statsu", "local.status"), ("local.aply", "local.apply"), ("scenario.retry", "scenario.retries")],
)
def test_unknown_task_names_the_closest(typed, suggested):
    result = inv(typed, program="meshy")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith(f"No idea what '{typed}' is! Closest tasks: ")
    assert suggested in line.split("Closest tasks: ")[1]


def test_unknown_flag_names_the_closest():
    result = inv("local.status", "--outptu", "json", program="meshy")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "No idea what '--outptu' is! Closest flags: --output, --state (inv --help local.status shows all)."
    )


def test_scripts_run_inv_is_the_program_with_suggestions():
    result = subprocess.run(
        [str(ROOT / "scripts" / "run"), "inv", "local.stauts"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Closest tasks: local.status" in result.stderr


@pytest.mark.parametrize("program", ["invoke", "meshy"])
def test_a_closed_pipe_ends_quietly(program):
    # The reader is gone before the first write: every write fails with EPIPE.
    process = subprocess.Popen(
        [sys.executable, "-m", program, "--dry", "up"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert stderr == ""


def test_piped_output_has_no_escape_sequences():
    result = inv("--dry", "up")
    assert result.returncode == 0
    assert "docker inspect" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_colours_a_terminal_only_and_honours_no_color():
    def marks(stream: io.StringIO, environ: dict[str, str]) -> str:
        with Console(stream, environ=environ).step("a step"):
            pass
        return stream.getvalue()

    assert "\x1b[32m✓\x1b[0m" in marks(Terminal(), {})
    assert "✓" in marks(Terminal(), {"NO_COLOR": "1"}) and "\x1b[32m" not in marks(Terminal(), {"NO_COLOR": "1"})
    piped = marks(io.StringIO(), {})
    assert "✓ a step" in piped and "\x1b" not in piped


def test_status_with_nothing_running_exits_non_zero(tmp_path):
    env = {"MESHY_STATE": str(tmp_path / "s")}
    result = inv("local.status", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: the local mesh is not running (state directory {tmp_path / 's'}); start it with inv local.up."
    )
    as_json = inv("local.status", "-o", "json", env=env)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "running": False,
        "stateDir": str(tmp_path / "s"),
        "pair": None,
        "ingress": None,
        "workloads": [],
    }


def test_status_refuses_an_unknown_output(tmp_path):
    result = inv("local.status", "-o", "yaml", env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: -o yaml is not known; use -o table or -o json."


def test_down_with_nothing_there_says_so(tmp_path):
    result = inv("local.down", env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 0
    assert result.stdout.strip() == f"no local mesh in {tmp_path / 's'}: nothing was running, nothing removed"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n# two\n---\n"])
def test_apply_of_nothing_is_an_error(tmp_path, text):
    (tmp_path / "empty.yaml").write_text(text)
    env = {"MESHY_STATE": str(tmp_path / "s")}
    for args in (["-f", str(tmp_path / "empty.yaml")], ["-f", "-"]):
        result = inv("local.apply", *args, env=env, input=text)
        assert result.returncode == 1
        assert result.stderr.strip().startswith("error: no objects passed to apply;")
    assert not (tmp_path / "s").exists()  # nothing half-created


def test_apply_of_a_directory_without_manifests_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("kind: Service")
    result = inv("local.apply", "-f", str(tmp_path), env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: {tmp_path} holds no .yaml, .yml, .json file; pass a directory of manifests or a file."
    )


def test_unreadable_manifest_is_one_line_before_anything_starts(tmp_path):
    manifest = tmp_path / "utf16.yaml"
    manifest.write_bytes("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n".encode("utf-16"))
    result = inv("local.apply", "-f", str(manifest), env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {manifest} is UTF-16 text; save it as UTF-8 and apply again."
    assert not (tmp_path / "s" / "state.json").exists()
