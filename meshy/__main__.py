"""python -m meshy: the task runner (invoke's `inv`, with suggestions for unknown names)."""

from meshy.cli import program

program.run()
