"""`inv` with one addition: an unknown task or flag is followed by the closest names.

invoke prints its ParseError ("No idea what 'x' is!") in Program.run and offers
no hook between parsing and printing (invoke 3.0.3 invoke/program.py), so this
is invoke's Program with the parse steps wrapped. `scripts/run inv ...` and
`python -m meshy ...` run it; everything else is invoke's own behaviour.
"""

from __future__ import annotations

import difflib
import re
import sys

from invoke import Program, __version__
from invoke.exceptions import ParseError

from meshy.tasks.runner import CLOSED_PIPE_EXIT, silence_stdout

UNKNOWN = re.compile(r"^No idea what '(?P<token>.+)' is!$")


class MeshyProgram(Program):
    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        try:
            super().run(argv, exit)
        except BrokenPipeError:  # `inv --list | head`: the reader left before invoke's own output ended
            silence_stdout()
            sys.exit(CLOSED_PIPE_EXIT)

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as error:
            raise self.with_suggestion(error) from None

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as error:  # `inv --help unknown-task`
            raise self.with_suggestion(error) from None

    def with_suggestion(self, error: ParseError) -> ParseError:
        match = UNKNOWN.match(str(error))
        if match is None:
            return error
        token = match["token"]
        context = error.context
        if token.startswith("-") and context is not None and context.name:
            hint = closest(token, list(context.flags), "flags", f"inv --help {context.name}")
        else:
            hint = closest(token, list(self.collection.task_names), "tasks", "inv --list")
        return ParseError(f"{error}{hint}", context)


def closest(token: str, names: list[str], what: str, listing: str) -> str:
    """' Closest tasks: a, b (LISTING shows all).' for the names most like token, also by their last dotted part."""
    by_tail = {name.rsplit(".", 1)[-1]: name for name in names}
    found = difflib.get_close_matches(token, names, n=3, cutoff=0.5)
    found += [by_tail[tail] for tail in difflib.get_close_matches(token, list(by_tail), n=3, cutoff=0.6)]
    found = list(dict.fromkeys(found))[:3]
    return f" Closest {what}: {', '.join(found)} ({listing} shows all)." if found else f" See {listing}."


program = MeshyProgram(name="Invoke", binary="inv[oke]", binary_names=["invoke", "inv"], version=__version__)
