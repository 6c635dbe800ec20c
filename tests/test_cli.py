"""The task runner as a user runs it: `inv ...` in a subprocess, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from meshy import ROOT


def inv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
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
    assert "k8s: label Namespace default istio-injection=enabled" in result.stdout


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


def test_unreadable_manifest_is_one_line_before_anything_starts(tmp_path):
    manifest = tmp_path / "utf16.yaml"
    manifest.write_bytes("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n".encode("utf-16"))
    result = inv("local.apply", "-f", str(manifest), env={"MESHY_STATE": str(tmp_path / "s")})
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {manifest} is UTF-16 text; save it as UTF-8 and apply again."
    assert not (tmp_path / "s" / "state.json").exists()
