"""Failures below the task layer reach the user as the one error line, not a traceback."""

from __future__ import annotations

import pytest

from meshy.errors import MeshyError
from meshy.local.supervisor import Supervisor, SupervisorError
from tests.test_cli import inv


def test_a_supervisord_that_cannot_start_is_a_project_error(tmp_path):
    supervisor = Supervisor(tmp_path / "state")
    supervisor.pidfile = tmp_path / "no-such-directory" / "supervisord.pid"  # supervisord refuses to start
    with pytest.raises(SupervisorError, match=r"^supervisord did not start \(Error: .*\); see .*supervisord\.log"):
        supervisor.start()
    assert issubclass(SupervisorError, MeshyError)


def test_a_bad_ingress_address_is_one_line(tmp_path):
    result = inv("local.up", env={"MESHY_STATE": str(tmp_path / "s"), "MESHY_INGRESS": "0.0.0.0:80"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: ingress address '0.0.0.0:80' is not a loopback HOST:PORT; "
        "set --ingress or MESHY_INGRESS to one like 127.0.0.1:8080."
    ]
    assert not (tmp_path / "s").exists()
