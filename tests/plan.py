"""A recording runner for unit tests of single steps: answers by regular expression, runs nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meshy import ROOT
from meshy.console import Console
from meshy.kind.context import Completed, Env, show


@dataclass
class Plan:
    """Records every command; answers each with the first matching (pattern -> Completed or stdout)."""

    answers: dict[str, Completed | str] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, argv: list[str], stdin: str | None, capture: bool) -> Completed:
        command = show(argv)
        self.calls.append((command, stdin))
        for pattern, answer in self.answers.items():
            if re.search(pattern, command):
                return answer if isinstance(answer, Completed) else Completed(0, answer)
        return Completed(0)

    @property
    def commands(self) -> list[str]:
        return [command.replace(str(ROOT), "<root>") for command, _ in self.calls]

    def env(self, pair, dry: bool = False) -> Env:
        return Env(pair, Console(quiet=True), self, dry)
