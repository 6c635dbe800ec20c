"""kind-style progress: each long step is one status line ending in a tick or a cross.

Escape sequences (the overwritten line, green and red marks) go to a terminal
only; NO_COLOR (https://no-color.org) turns the colours off there too.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

GREEN, RED = "32", "31"  # SGR colour codes


def colour_allowed(stream: TextIO, environ: Mapping[str, str]) -> bool:
    return stream.isatty() and not environ.get("NO_COLOR")


class Console:
    def __init__(
        self,
        stream: TextIO | None = None,
        quiet: bool = False,
        planning: bool = False,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        # Under `inv --dry` nothing runs: a step is a heading for the commands it would run.
        self.planning = planning
        self.tty = self.stream.isatty()
        self.colour = colour_allowed(self.stream, environ)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        if self.planning:
            self.info(f"# {message}")
            yield
            return
        started = time.monotonic()
        if self.tty and not self.quiet:
            print(f" • {message} ...", end="\r", file=self.stream, flush=True)
        try:
            yield
        except BaseException:
            self._end(self.paint("✗", RED), message, started)
            raise
        self._end(self.paint("✓", GREEN), message, started)

    def progress(self, message: str, done: int, total: int) -> None:
        """A self-overwriting counter on a terminal; silent when piped."""
        if self.tty and not self.quiet:
            print(f" • {message} {done}/{total}", end="\r", file=self.stream, flush=True)

    def _end(self, mark: str, message: str, started: float) -> None:
        if not self.quiet:
            clear = "\x1b[2K" if self.tty else ""
            print(f"{clear} {mark} {message} ({time.monotonic() - started:.1f}s)", file=self.stream, flush=True)

    def paint(self, text: str, colour: str) -> str:
        return f"\x1b[{colour}m{text}\x1b[0m" if self.colour else text
