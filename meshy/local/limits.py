"""Operating-system limits checked before the local mesh starts many processes.

Each pod is two processes (an app and an Envoy sidecar with several threads);
supervisord holds a few descriptors per program and the xDS server one per
proxy. When a limit would be crossed, the apply is refused with the setting
to raise, instead of proxies crash-looping half-started.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

# Measured on Envoy 1.40 with --concurrency 1 (main, worker, file flush,
# stats, DNS, gRPC) and minimal-service; rounded up.
THREADS_PER_PROXY = 10
THREADS_PER_APP = 2
FDS_PER_PROGRAM = 4  # supervisord: stdout/stderr pipes and the log file
MB_PER_POD = 45  # resident, app and sidecar together


@dataclass(frozen=True)
class Limits:
    user_threads: int | None  # RLIMIT_NPROC (counts threads); None: unlimited
    user_threads_used: int
    system_threads: int  # kernel.threads-max
    system_threads_used: int
    open_files: int | None  # supervisord's RLIMIT_NOFILE; None: unlimited
    open_files_used: int
    memory_available_mb: int


def read_limits(supervisord_pid: int | None) -> Limits:
    soft_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    if supervisord_pid is not None:
        open_files = supervisor_open_files(supervisord_pid)
        used_files = len(os.listdir(f"/proc/{supervisord_pid}/fd"))
    else:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        open_files, used_files = (None if soft == resource.RLIM_INFINITY else soft), 0
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return Limits(
        user_threads=None if soft_nproc == resource.RLIM_INFINITY else soft_nproc,
        user_threads_used=user_threads(os.getuid()),
        system_threads=int(Path("/proc/sys/kernel/threads-max").read_text()),
        system_threads_used=int(Path("/proc/loadavg").read_text().split()[3].split("/")[1]),
        open_files=open_files,
        open_files_used=used_files,
        memory_available_mb=int(meminfo["MemAvailable"].split()[0]) // 1024,
    )


def supervisor_open_files(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


def user_threads(uid: int) -> int:
    """Threads the user runs now (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            total += int(fields.get("Threads", "0"))
    return total


def check(limits: Limits, proxies: int, apps: int) -> str | None:
    """None if `proxies` more Envoys and `apps` more apps fit, else one sentence naming the setting to raise."""
    threads = proxies * THREADS_PER_PROXY + apps * THREADS_PER_APP
    what = f"starting {proxies} proxies and {apps} apps"
    if limits.user_threads is not None and limits.user_threads_used + threads > limits.user_threads:
        return (
            f"{what} needs about {threads} more threads, but this user may run {limits.user_threads} "
            f"and runs {limits.user_threads_used}; raise the process limit (ulimit -u, RLIMIT_NPROC) or use fewer replicas."
        )
    if limits.system_threads_used + threads > limits.system_threads:
        return (
            f"{what} needs about {threads} more threads, but the kernel allows {limits.system_threads} "
            f"and {limits.system_threads_used} run; raise sysctl kernel.threads-max or use fewer replicas."
        )
    files = (proxies + apps) * FDS_PER_PROGRAM + proxies
    if limits.open_files is not None and limits.open_files_used + files > limits.open_files:
        return (
            f"{what} needs about {files} more open files in supervisord, which may hold {limits.open_files} "
            f"and holds {limits.open_files_used}; raise the open-files limit (ulimit -n) and run inv local.down "
            "and inv local.up again (supervisord keeps the limit it started with), or use fewer replicas."
        )
    memory = apps * MB_PER_POD
    if memory > limits.memory_available_mb:
        return (
            f"{what} needs about {memory} MB of memory and {limits.memory_available_mb} MB are available; "
            "free memory or use fewer replicas."
        )
    return None


def raise_open_files() -> None:
    """Lift this process's soft open-files limit to its hard limit, for supervisord to inherit.

    Distributions default to a soft limit of 1024 with a far higher hard one;
    a few hundred programs need more than 1024 descriptors in supervisord.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
