"""The one error type every known failure derives from.

A MeshyError's message is a whole sentence naming the cause and the fix; the
task runner (meshy.tasks.runner) turns any of them into that one line on
stderr and the exit code below, so no call site catches them itself.
"""

from __future__ import annotations


class MeshyError(Exception):
    """A failure the user can act on; str(error) says what happened and what to do."""

    exit_code = 1
    # What precedes the sentence on stderr; an interruption is not an error of the user's.
    label = "error: "
