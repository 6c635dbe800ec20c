"""What one program of the local mesh is: the JSON spec the supervisor layer writes and launch.py reads.

Its arguments and environment may hold manifest text; as JSON they reach the
process as data, never as supervisord syntax.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Spec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    directory: str = "/"
    log: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls(**json.loads(text))
