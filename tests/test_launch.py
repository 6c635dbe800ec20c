"""The launch layer: hostile names and values reach processes as data, never as supervisord syntax."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from meshy import ROOT
from meshy.local import launch
from meshy.local.backend import LocalBackend, LocalConfig, LocalError
from meshy.local.paths import PathError, child, write_private
from meshy.local.supervisor import Program, Supervisor, is_launcher, leftover_pids, stop_all
from meshy.net import free_port, http_ok, wait_until

# Written into an INI file, these would add programs that touch a file (the old way: environment=NAME="VALUE").
HOSTILE_NAME = "X\n[program:evil]\n"
HOSTILE_VALUE = 'line one\ncommand=/bin/touch {pwned}\nautostart=true\n[program:evil2]\ncommand=/bin/touch {pwned}\n%(here)s "q" ; c'


def dump_env_program(out: Path, env: dict[str, str], name: str = "hostile") -> Program:
    # Written beside and renamed: the test sees the whole file or none.
    tmp = out.with_suffix(".tmp")
    script = (
        f"import json, os; open({str(tmp)!r}, 'w').write(json.dumps(dict(os.environ), sort_keys=True)); "
        f"os.replace({str(tmp)!r}, {str(out)!r})"
    )
    # A program that stays up (startsecs) after writing what it received.
    return Program(name, [sys.executable, "-c", script + "; import time; time.sleep(60)"], env)


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(tmp_path / "state")
    sup.start()
    yield sup
    stop_all(sup.state_dir)


def test_hostile_env_names_and_values_are_data(supervisor, tmp_path):
    pwned = tmp_path / "pwned"
    out = tmp_path / "env.json"
    env = {HOSTILE_NAME: HOSTILE_VALUE.format(pwned=pwned), "VALUE": HOSTILE_VALUE.format(pwned=pwned)}
    supervisor.sync([dump_env_program(out, env)])
    assert wait_until(out.exists, timeout=10)
    received = json.loads(out.read_text())
    assert received["VALUE"] == env["VALUE"]
    assert received[HOSTILE_NAME] == env["VALUE"]
    assert received["MESHY_STATE_DIR"] == str(supervisor.state_dir)
    assert [p.name for p in supervisor.processes()] == ["hostile"]
    assert not pwned.exists()
    # Nothing of the manifest text is in supervisord's configuration.
    configs = "".join(p.read_text() for p in supervisor.programs_dir.glob("*.conf"))
    assert "evil" not in configs and "line one" not in configs


@pytest.mark.parametrize("name", ["A=B", "A\0B", ""])
def test_env_names_no_process_can_carry_are_refused(supervisor, name):
    with pytest.raises(PathError, match="cannot be passed to a process"):
        supervisor.sync([Program("p", [sys.executable, "-c", "pass"], {name: "v"})])
    assert list(supervisor.programs_dir.iterdir()) == []


def test_env_cannot_hide_a_process_from_down(supervisor, tmp_path):
    out = tmp_path / "env.json"
    supervisor.sync([dump_env_program(out, {"MESHY_STATE_DIR": "/elsewhere"})])
    assert wait_until(out.exists, timeout=10)
    assert json.loads(out.read_text())["MESHY_STATE_DIR"] == str(supervisor.state_dir)
    ended = stop_all(supervisor.state_dir)
    assert {e.name for e in ended} == {"supervisord", "hostile"}
    assert leftover_pids(supervisor.state_dir) == []


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "", "x\n[program:y]"])
def test_program_names_that_are_not_one_path_component_are_refused(supervisor, tmp_path, name):
    with pytest.raises(PathError, match="cannot name a file of the local mesh"):
        supervisor.sync([Program(name, [sys.executable, "-c", "pass"])])
    assert not (tmp_path / "escape").exists()
    assert list(supervisor.programs_dir.iterdir()) == []


def test_paths_through_a_symlink_out_of_the_state_directory_are_refused(tmp_path):
    root = tmp_path / "state"
    root.mkdir()
    (root / "envoy").symlink_to(tmp_path)
    with pytest.raises(PathError, match="leads outside the state directory"):
        child(root, "envoy", "pod")


def test_backend_refuses_a_proxy_directory_outside_the_state(tmp_path):
    backend = LocalBackend(LocalConfig(tmp_path / "state"))
    with pytest.raises(LocalError, match="cannot name a file of the local mesh"):
        backend.proxy_dir("../../escape")


@pytest.mark.parametrize("bad", ["with%percent", "semi;colon", "new\nline"])
def test_state_directories_supervisord_would_misread_are_refused(tmp_path, bad):
    with pytest.raises(LocalError, match="choose another one with --state or MESHY_STATE"):
        LocalConfig.from_env(str(tmp_path / bad))


def test_written_files_and_logs_are_owner_only(supervisor, tmp_path):
    out = tmp_path / "env.json"
    supervisor.sync([dump_env_program(out, {})])
    assert wait_until(out.exists, timeout=10)
    write_private(supervisor.state_dir / "sub" / "file.json", "{}")
    for path in [supervisor.state_dir, supervisor.logs, supervisor.programs_dir, supervisor.state_dir / "sub"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    files = [supervisor.conf, supervisor.state_dir / "sub" / "file.json", supervisor.logs / "hostile.log"]
    files += list(supervisor.programs_dir.glob("*.json")) + [supervisor.logs / "supervisord.log"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_fatal_program_is_revived_by_sync(supervisor, tmp_path):
    flag = tmp_path / "may-run"
    out = tmp_path / "ran"
    script = (
        f"import os, sys, time; os.path.exists({str(flag)!r}) or sys.exit(3); open({str(out)!r}, 'w'); time.sleep(60)"
    )
    program = Program("flaky", [sys.executable, "-c", script])
    supervisor.sync([program])
    # It exits at once on every start: supervisord retries with back-off, then gives up.
    assert wait_until(lambda: supervisor.processes()[0].state == "FATAL", timeout=60, interval=0.2)
    flag.touch()
    supervisor.sync([program])
    assert wait_until(out.exists, timeout=10)
    assert wait_until(lambda: supervisor.processes()[0].state == "RUNNING", timeout=10)
    assert supervisor.processes()[0].restarts >= 5


def test_minimal_service_serves_when_its_stdout_is_gone(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(SERVICE_PORT=str(port), HOSTNAME="pipe-test")
    read, write = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "minimal_service"], cwd=ROOT, env=env, stdout=write)
    os.close(write)
    try:
        url = f"http://127.0.0.1:{port}/"
        with os.fdopen(read, "rb") as pipe:
            assert pipe.readline().startswith(b"Logger")  # started and logging
        # The reader is gone (as when supervisord dies): every log line now hits a broken pipe.
        assert wait_until(lambda: http_ok(url), timeout=10)
        session = requests.Session()
        session.trust_env = False
        statuses = [session.get(url, timeout=5).status_code for _ in range(60)]
        assert statuses == [200] * 60
    finally:
        process.kill()
        process.wait()


# --- hand-over: a new supervisord's launchers adopt what a killed one left running --------------------------


def sleeper(name: str = "sleeper", on_term: str = "exit") -> Program:
    """A program that runs until stopped; with on_term="ignore" it outlives SIGTERM."""
    handler = "signal.SIG_IGN" if on_term == "ignore" else "lambda *_: sys.exit(0)"
    script = f"import signal, sys, time; signal.signal(signal.SIGTERM, {handler}); time.sleep(600)"
    return Program(name, [sys.executable, "-c", script])


def program_pid(supervisor: Supervisor, name: str = "sleeper") -> int:
    return next(p.pid for p in supervisor.processes() if p.name == name)


def kill_supervisord(supervisor: Supervisor) -> None:
    os.kill(supervisor.pid(), signal.SIGKILL)
    assert wait_until(lambda: not supervisor.running(), timeout=5)


def adopted(supervisor: Supervisor, pid: int, name: str = "sleeper") -> bool:
    """supervisord runs the program and names the old process as it: a launcher holds it."""
    return any(p.name == name and p.pid == pid and p.state in ("STARTING", "RUNNING") for p in supervisor.processes())


def started_anew(supervisor: Supervisor, old: int, name: str = "sleeper") -> bool:
    """supervisord runs the program in a process of its own (its launcher exec'ed it), not the old one."""
    pid = program_pid(supervisor, name)
    record = launch.read_served(supervisor.programs_dir / f"{name}.json")
    return pid not in (0, old) and record is not None and record.pid == record.holder == pid


def launchers(state_dir: Path) -> list[int]:
    return [pid for pid in leftover_pids(state_dir) if is_launcher(pid)]


def orphaned(supervisor: Supervisor, program: Program) -> int:
    """Run the program, then kill its supervisord; return the pid of the program left running."""
    supervisor.sync([program])
    assert wait_until(lambda: started_anew(supervisor, 0), timeout=10)
    pid = program_pid(supervisor)
    kill_supervisord(supervisor)
    return pid


def handed_over(supervisor: Supervisor, program: Program) -> int:
    """The program left running by a killed supervisord, adopted by a new one; return its pid."""
    pid = orphaned(supervisor, program)
    supervisor.start()
    assert wait_until(lambda: adopted(supervisor, pid), timeout=10)
    return pid


def test_a_new_supervisord_adopts_the_running_program(supervisor):
    pid = handed_over(supervisor, sleeper())
    assert supervisor.processes()[0].restarts == 0  # adopting is not a start
    assert len(launchers(supervisor.state_dir)) == 1
    # Killed again: the first adopter leaves with its supervisord; the next one adopts the same process.
    first_adopter = launchers(supervisor.state_dir)[0]
    kill_supervisord(supervisor)
    assert wait_until(lambda: launch.start_time(first_adopter) is None, timeout=5)
    supervisor.start()
    assert wait_until(lambda: adopted(supervisor, pid), timeout=10)
    assert len(launchers(supervisor.state_dir)) == 1
    assert [e.name for e in stop_all(supervisor.state_dir)] in (["supervisord", "sleeper"], ["sleeper", "supervisord"])
    assert leftover_pids(supervisor.state_dir) == []


def test_an_adopted_program_that_dies_is_restarted(supervisor):
    pid = handed_over(supervisor, sleeper())
    os.kill(pid, signal.SIGKILL)
    # Its launcher exits with it, and supervisord starts the program anew (not adopting a dead pid).
    assert wait_until(lambda: started_anew(supervisor, pid), timeout=10)
    assert supervisor.processes()[0].restarts == 1


@pytest.mark.parametrize("on_term", ["exit", "ignore"])
def test_stopping_an_adopted_program_reaches_it(supervisor, on_term):
    pid = handed_over(supervisor, sleeper(on_term=on_term))
    started = time.monotonic()
    # SIGTERM, passed on by the launcher; one that ignores it is killed before supervisord would kill the launcher.
    supervisor.rpc().supervisor.stopProcess("sleeper")
    assert launch.start_time(pid) is None
    assert time.monotonic() - started < launch.STOP_WAIT_S
    assert supervisor.processes()[0].state == "STOPPED"
    assert launchers(supervisor.state_dir) == []


def test_a_changed_spec_is_started_anew_not_adopted(supervisor):
    pid = orphaned(supervisor, sleeper())
    spec = supervisor.programs_dir / "sleeper.json"
    changed = json.loads(spec.read_text())
    changed["env"] = {"CHANGED": "1"}
    spec.write_text(json.dumps(changed))
    supervisor.start()
    assert wait_until(lambda: started_anew(supervisor, pid), timeout=10)
    assert launch.start_time(pid) is not None  # left for the caller (hand_over stops what was not adopted)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("record", ["the program", "another start time", "no marker", "a dead process"])
def test_only_the_program_itself_is_adopted(supervisor, record):
    supervisor.sync([sleeper()])
    assert wait_until(lambda: started_anew(supervisor, 0), timeout=10)
    supervisor.rpc().supervisor.stopProcess("sleeper")
    spec_path = supervisor.programs_dir / "sleeper.json"
    digest = launch.read_record(spec_path).digest
    # A process that carries the program's name and marker, as one left by a killed supervisord does.
    env = {**os.environ, launch.PROGRAM: "sleeper", launch.MARKER: str(supervisor.state_dir)}
    candidate = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    try:
        pid, start = candidate.pid, launch.start_time(candidate.pid)
        if record == "another start time":
            start += 1  # the pid was reused by another process since the record was written
        elif record == "no marker":
            pid, start = os.getpid(), launch.start_time(os.getpid())
        elif record == "a dead process":
            candidate.kill()
            candidate.wait()
        write_private(Path(launch.served_file(spec_path)), launch.served_text(launch.Served(pid, start, digest, pid)))
        supervisor.rpc().supervisor.startProcess("sleeper")
        if record == "the program":
            assert wait_until(lambda: program_pid(supervisor) == candidate.pid, timeout=10)
        else:
            assert wait_until(lambda: started_anew(supervisor, 0), timeout=10)
            assert program_pid(supervisor) not in (candidate.pid, os.getpid())
            assert launch.read_record(spec_path).holder == program_pid(supervisor)
    finally:
        candidate.kill()
        candidate.wait()


def test_sync_stops_retiring_programs_together_and_leaves_none(supervisor, tmp_path):
    # Each program notes when TERM reaches it, lingers, then notes its end: stopped together, every TERM
    # comes before any end; stopped one after another, the second TERM would follow the first end.
    def lingering(name: str) -> Program:
        log = tmp_path / f"{name}.log"
        script = (
            "import signal, sys, time\n"
            f"def term(*_):\n    open({str(log)!r}, 'a').write(f'term {{time.time()}}\\n'); time.sleep(1)\n"
            f"    open({str(log)!r}, 'a').write(f'end {{time.time()}}\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, term)\n"
            f"open({str(log)!r}, 'a').write('up\\n')\n"
            "while True: time.sleep(60)\n"
        )
        return Program(name, [sys.executable, "-c", script])

    names = ["a", "b", "c"]
    supervisor.sync([lingering(n) for n in names])
    assert wait_until(lambda: all((tmp_path / f"{n}.log").exists() for n in names), timeout=20)
    assert wait_until(lambda: {p.state for p in supervisor.processes()} == {"RUNNING"}, timeout=20)
    supervisor.sync([])
    assert supervisor.processes() == []
    times = {
        n: dict(line.split() for line in (tmp_path / f"{n}.log").read_text().split("\n")[1:] if line) for n in names
    }
    assert max(float(t["term"]) for t in times.values()) < min(float(t["end"]) for t in times.values())
    assert leftover_pids(supervisor.state_dir) == [supervisor.pid()]
