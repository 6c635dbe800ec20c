"""How every task runs: one meaning per short flag, known failures as one line.

invoke builds a task's flags in Task.arg_opts and runs the parsed tasks through
the Executor named by the `tasks.executor_class` setting (invoke.yaml beside
tasks.py); both hooks are those of invoke 3.0.3 (invoke/tasks.py Task.arg_opts,
invoke/program.py Program.execute).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import invoke
from invoke.exceptions import Exit

from meshy.console import colour_allowed
from meshy.errors import MeshyError

# kubectl's letters where kubectl has them (-f file, -o output); no other
# option gets a short flag, so a letter never means two things.
SHORT_FLAGS = {"file": "f", "output": "o", "k8s": "k", "istio": "i", "state": "s", "backend": "b"}
# What a shell reports for a process ended by SIGPIPE (128 + 13).
CLOSED_PIPE_EXIT = 141


class Task(invoke.Task):
    """A task whose short flags come from SHORT_FLAGS instead of first free letters."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        opts["names"] = opts["names"][:1] + ([short] if short else [])
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task, making a Task of this module."""
    return invoke.task(*args, klass=Task, **kwargs)


class Executor(invoke.Executor):
    """Runs the tasks; a MeshyError becomes `error: <sentence>` and its exit code, a closed pipe a quiet end."""

    def execute(self, *tasks: Any) -> dict:
        if not colour_allowed(sys.stdout, os.environ):
            # invoke echoes commands (--echo, --dry) in bold white escapes wherever stdout goes.
            self.config.run.echo_format = "{command}"
        try:
            results = super().execute(*tasks)
            # A pipe is block-buffered: a reader that left shows up here, not at print time.
            sys.stdout.flush()
            return results
        except MeshyError as error:
            raise Exit(f"{error.label}{error}", code=error.exit_code) from None
        except BrokenPipeError:
            silence_stdout()
            raise Exit(code=CLOSED_PIPE_EXIT) from None


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
