"""Limits checked before many processes start: each refusal names the setting to raise."""

from __future__ import annotations

import dataclasses
import os
import resource

from meshy.local import limits

ROOMY = limits.Limits(
    user_threads=None,
    user_threads_used=100,
    system_threads=100_000,
    system_threads_used=1_000,
    open_files=65_536,
    open_files_used=50,
    memory_available_mb=20_000,
)


def test_two_hundred_pods_fit_in_a_roomy_machine():
    assert limits.check(ROOMY, proxies=202, apps=200) is None


def test_each_limit_names_its_setting():
    cases = {
        "ulimit -u": dataclasses.replace(ROOMY, user_threads=1_000),
        "kernel.threads-max": dataclasses.replace(ROOMY, system_threads=2_000),
        "ulimit -n": dataclasses.replace(ROOMY, open_files=1_024),
        "free memory": dataclasses.replace(ROOMY, memory_available_mb=1_000),
    }
    for setting, tight in cases.items():
        problem = limits.check(tight, proxies=202, apps=200)
        assert problem is not None and setting in problem, (setting, problem)
        assert limits.check(tight, proxies=1, apps=1) is None


def test_limits_read_from_this_machine():
    found = limits.read_limits(os.getpid())
    assert found.user_threads_used >= 1 and found.system_threads_used >= found.user_threads_used
    assert found.open_files_used >= 3 and found.memory_available_mb > 0
    assert found.open_files in (None, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
