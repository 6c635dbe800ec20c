"""The image recipe (no image can be built here): the properties the issue asks of it."""

import json
import re

from meshy import ROOT

DOCKERFILE = (ROOT / "minimal_service" / "Dockerfile").read_text()
LINES = [
    line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")
]


def test_multi_stage_on_a_base_pinned_by_digest():
    base = re.search(r"^ARG BASE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11-slim[\w.-]*@sha256:[0-9a-f]{64}", base)
    froms = [line for line in LINES if line.startswith("FROM ")]
    assert len(froms) == 2 and all("${BASE}" in line for line in froms)


def test_runs_as_a_non_root_user():
    users = [line.split()[1] for line in LINES if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_healthcheck_on_health_and_exec_form_entrypoint():
    healthcheck = next(line for line in LINES if line.startswith("HEALTHCHECK"))
    assert "/health" in healthcheck and "CMD [" in healthcheck
    entrypoint = next(line for line in LINES if line.startswith("ENTRYPOINT"))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["python", "-m", "minimal_service"]


def test_listens_on_all_interfaces_inside_the_container():
    assert "SERVICE_ADDRESS=0.0.0.0" in DOCKERFILE
