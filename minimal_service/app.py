"""The HTTP behaviour of minimal-service as a raw ASGI application.

Raw ASGI (no framework) keeps one worker above 8,000 requests/s; see the
README's benchmark figures.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson

from minimal_service.bounce import BounceError, fetch_status
from minimal_service.config import Settings
from minimal_service.metrics import Metrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 1 << 20
BOUNCE_WORKERS = 64
# Content types a /bounce body may carry; curl -d sends form-urlencoded.
BOUNCE_TYPES = {"", "application/json", "application/x-www-form-urlencoded", "text/plain"}
PROPAGATED = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Request:
    """What a handler needs of one request, decoded once."""

    __slots__ = ("method", "path", "uri", "protocol", "headers", "body", "client", "started")

    def __init__(self, scope: Scope, body: bytes, started: float) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        query = scope.get("query_string", b"")
        raw_path = scope.get("raw_path") or self.path.encode()
        self.uri = (raw_path + (b"?" + query if query else b"")).decode("latin-1")
        self.protocol = "HTTP/" + scope.get("http_version", "1.1")
        self.headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text
        self.body = body
        client = scope.get("client")
        self.client = f"{client[0]}:{client[1]}" if client else "-"
        self.started = started

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def canonical(name: str) -> str:
    """Go's canonical header form (User-Agent), which the walkthrough's JSON shows."""
    return "-".join(part[:1].upper() + part[1:] for part in name.lower().split("-"))


def status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


class MinimalService:
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self.metrics = Metrics()
        # Outgoing calls block in requests; this bounds how many run at once
        # (asyncio's default pool would allow only cores + 4).
        self.bounces = ThreadPoolExecutor(max_workers=BOUNCE_WORKERS, thread_name_prefix="bounce")
        self.tracer = None
        if settings.tracing:
            # Imported only here so that TRACING=0 loads nothing of OpenTelemetry.
            from minimal_service.tracing import Tracer

            self.tracer = Tracer(settings.jaeger_url, settings.hostname)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            body = await read_body(receive)
            request = Request(scope, body, started)
            status, headers, payload = await self.handle(request)
        except HttpError as error:
            request = None
            status, headers, payload = error.status, TEXT, (error.reason + "\n").encode()
        headers = [*headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - started
        self.metrics.observe(scope["path"], scope["method"], status, elapsed)
        if self.settings.log_requests:
            client = request.client if request else "-"
            # " tls" marks a request that came over TLS: what an external HTTPS service reports.
            tls = " tls" if scope.get("scheme") == "https" else ""
            log(f"[INFO] [{scope['method']} {scope['path']} {client}{tls}] {status}")

    async def handle(self, request: Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if request.path == "/health" and request.method == "GET":
            return 200, TEXT, b"Status OK"
        if request.path == "/metrics" and request.method == "GET":
            return 200, PROMETHEUS, self.metrics.render().encode()
        if self.settings.discard_quota and self.rng.random() * 100 < self.settings.discard_quota:
            if self.settings.reject:
                return 500, TEXT, b"Internal Server Error\n"
            # The original drops the request: an empty 200, no useful answer.
            return 200, [], b""
        if self.settings.delay_max:
            await asyncio.sleep(self.rng.uniform(0, self.settings.delay_max))
        if request.method == "GET":
            if request.content_type == "text/plain":
                return 200, TEXT, self.render_text(request).encode()
            return 200, JSON, self.render_json(request)
        if request.method == "POST" and request.path == "/bounce":
            return await self.bounce(request)
        return 405, TEXT, b"Method Not Allowed: use GET, or POST /bounce\n"

    async def bounce(self, request: Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if request.content_type not in BOUNCE_TYPES:
            raise HttpError(415, f"Unsupported Media Type {request.content_type!r}: send the body as application/json")
        endpoint = parse_bounce(request.body)
        outgoing = {name: request.headers[name] for name in PROPAGATED if name in request.headers}
        span = self.tracer.start(request, outgoing) if self.tracer else None
        try:
            loop = asyncio.get_running_loop()
            code, upstream_headers = await loop.run_in_executor(self.bounces, fetch_status, endpoint, outgoing)
        except BounceError as error:
            if span:
                span.end_with(502)
            raise HttpError(502, f"Bad Gateway: {error}") from None
        if span:
            span.end_with(code)
        document = self.document(request, upstream_headers)
        document["body"] = status_line(code)
        return 200, JSON, orjson.dumps(document)

    def document(self, request: Request, headers: dict[str, str]) -> dict[str, Any]:
        elapsed = time.perf_counter() - request.started
        now = time.time()
        flat = {canonical(name): value for name, value in headers.items()}
        flat["Request-time"] = utc(now - elapsed)
        flat["Response-time"] = utc(now)
        flat["Duration"] = f"{elapsed * 1000:.3f}"
        return {
            "host": request.host,
            "statuscode": 200,
            "headers": flat,
            "protocol": request.protocol,
            "requestURI": request.uri,
            "servedBy": self.settings.hostname,
            "method": request.method,
        }

    def render_json(self, request: Request) -> bytes:
        document = self.document(request, request.headers)
        if request.body:
            document["body"] = request.body.decode("utf-8", "replace")
        return orjson.dumps(document)

    def render_text(self, request: Request) -> str:
        document = self.document(request, request.headers)
        lines = [
            f"Request served by {self.settings.hostname}",
            "",
            f"{request.method} {request.uri} {request.protocol}",
            f"Host: {request.host}",
        ]
        lines += [f"{name}: {value}" for name, value in sorted(document["headers"].items())]
        lines.append("")
        return "\n".join(lines) + "\n" + request.body.decode("utf-8", "replace")


TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
JSON = [(b"content-type", b"application/json")]
PROMETHEUS = [(b"content-type", b"text/plain; version=0.0.4")]


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, f"Payload Too Large: bodies are limited to {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def parse_bounce(body: bytes) -> str:
    """The endpoint of a strict {"rebound": "true", "endpoint": URL} body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HttpError(
            400, 'Bad Request: the body is not JSON; send {"rebound":"true","endpoint":"http://host:port"}'
        ) from None
    if not isinstance(data, dict) or set(data) != {"rebound", "endpoint"}:
        raise HttpError(400, 'Bad Request: the body must have exactly the keys "rebound" and "endpoint"')
    if data["rebound"] != "true":
        raise HttpError(400, 'Bad Request: "rebound" must be the string "true"')
    endpoint = data["endpoint"]
    if not isinstance(endpoint, str):
        raise HttpError(400, 'Bad Request: "endpoint" must be a string URL')
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(400, f"Bad Request: endpoint {endpoint!r} is not an http(s) URL with a host")
    return endpoint


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def log(line: str) -> None:
    """One log line on stdout; a lost log (closed pipe, full disk) never fails the request it describes."""
    stamp = datetime.now().strftime("%Y/%m/%d %H:%M:%S")
    try:
        sys.stdout.write(f"Logger: {stamp}  {line}\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
