"""nox sessions: tests, lint, render, e2e-local, e2e-<k8s>-istio-<istio>, bench.

Every session installs requirements.txt into its own virtual environment;
environments are reused between runs, so only the first run pays for it.
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]


def install(session: nox.Session, *extra: str) -> None:
    session.install("-r", "requirements.txt", *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, golden and black-box tests (real processes, real Envoy, real HTTP)."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
