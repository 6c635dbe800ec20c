"""Run the ASGI app on uvicorn with graceful SIGTERM handling."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import ssl
import sys
from collections.abc import Iterator

import uvicorn

from minimal_service.app import MinimalService, log
from minimal_service.config import Settings

# SIGTERM: uvicorn stops accepting, lets in-flight requests finish, then exits;
# this bounds the wait so the process is gone within 5 s.
GRACE_SECONDS = 4


class _Server(uvicorn.Server):
    # The servers of one process (plain and TLS): a signal stops them all.
    peers: list[uvicorn.Server]

    def stop_all(self, sig: int, frame: object) -> None:
        for server in self.peers:
            server.handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after a graceful stop, which makes the
        # exit status -15; a clean stop on SIGTERM should exit 0.
        previous = {sig: signal.signal(sig, self.stop_all) for sig in (signal.SIGINT, signal.SIGTERM)}
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
    ports = {"SERVICE_PORT": settings.port} | ({"TLS_PORT": settings.tls_port} if settings.tls_port else {})
    sockets = []
    for variable, port in ports.items():
        try:
            sockets.append(listen(dataclasses.replace(settings, port=port)))
        except OSError as error:
            print(
                f"minimal-service: cannot listen on {settings.address}:{port} ({error.strerror}): "
                f"choose a free port with {variable}.",
                file=sys.stderr,
            )
            return 1
    app = MinimalService(settings)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    options = dict(
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="debug" if settings.debug else "warning",
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
        date_header=False,
    )
    servers = [_Server(uvicorn.Config(app, **options))]
    if settings.tls_port:
        mutual = (
            {"ssl_ca_certs": settings.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
            if settings.tls_client_ca
            else {}
        )
        tls = uvicorn.Config(app, ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key, **mutual, **options)
        servers.append(_Server(tls))
    for server in servers:
        server.peers = servers
    log(f"[INFO] [Starting server on {settings.address}:{settings.port} as {settings.hostname}]")
    if settings.tls_port:
        log(f"[INFO] [Serving TLS on {settings.address}:{settings.tls_port}]")
    try:
        with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
            runner.run(_serve_all(servers, sockets))
    finally:
        if app.tracer:
            app.tracer.shutdown()
    return 0


async def _serve_all(servers: list[_Server], sockets: list[socket.socket]) -> None:
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in zip(servers, sockets, strict=True)))
