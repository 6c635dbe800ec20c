"""Run the ASGI app on uvicorn with graceful SIGTERM handling."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from minimal_service.app import MinimalService, log
from minimal_service.config import Settings

# SIGTERM: uvicorn stops accepting, lets in-flight requests finish, then exits;
# this bounds the wait so the process is gone within 5 s.
GRACE_SECONDS = 4


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after a graceful stop, which makes the
        # exit status -15; a clean stop on SIGTERM should exit 0.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.address, settings.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    try:
        sock = listen(settings)
    except OSError as error:
        print(
            f"minimal-service: cannot listen on {settings.address}:{settings.port} ({error.strerror}): "
            "choose a free port with SERVICE_PORT.",
            file=sys.stderr,
        )
        return 1
    app = MinimalService(settings)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="debug" if settings.debug else "warning",
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
        date_header=False,
    )
    log(f"[INFO] [Starting server on {settings.address}:{settings.port} as {settings.hostname}]")
    try:
        _Server(config).run(sockets=[sock])
    finally:
        if app.tracer:
            app.tracer.shutdown()
    return 0
