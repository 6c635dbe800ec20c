"""invoke's MockContext, recording every command and answering by regular expression."""

from __future__ import annotations

import re

from invoke import Config, MockContext, Result

from meshy import ROOT
from meshy.console import Console
from meshy.kind.context import Env, PlanKube


class Plan:
    """A MockContext whose commands are recorded and answered by regular expressions."""

    def __init__(self, answers: dict[str, str] | None = None, dry: bool = True) -> None:
        self.answers = answers or {}
        self.said: list[str] = []
        self.c = MockContext(config=Config(overrides={"run": {"dry": dry}}), run=Result(""), repeat=True)
        self.c.run.side_effect = self.answer

    def answer(self, command, **kwargs) -> Result:
        for pattern, stdout in self.answers.items():
            if re.search(pattern, command):
                return Result(stdout, command=command)
        return Result("", command=command)

    @property
    def commands(self) -> list[str]:
        return [call.args[0].replace(str(ROOT), "<root>") for call in self.c.run.call_args_list]

    def env(self, pair) -> Env:
        return Env(self.c, pair, Console(quiet=True), PlanKube(f"kind-{pair.cluster_name}", self.said.append))
