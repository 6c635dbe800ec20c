"""What a scenario hands back: checks with numbers, and the sampling design behind them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# A check whose outcome is random passes a working feature at least 9,999 times
# in 10,000. A demo holds about 17 such checks: at 0.001 each, a working mesh
# failed one demo in 60 (seen in an e2e-local run: fault-injection's abort share,
# p = 0.00075); at 0.0001, one in 600. Every sample size is chosen so that a
# broken feature fails at least 999 times in 1,000 (see the design notes).
ALPHA = 0.0001
POWER = 0.999


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    expected: str
    detail: str
    passed: bool


@dataclass
class Phase:
    """One stage's raw observations, kept for the report's picture."""

    name: str
    counts: dict[str, int]
    expected: dict[str, float] = field(default_factory=dict)  # share each label should get
    # A panel of means instead of shares (e.g. attempts per call): label -> (mean, band low, band high).
    means: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass
class Report:
    scenario: str
    backend: str
    pair: str
    summary: str
    checks: list[Check] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    design: list[str] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data
