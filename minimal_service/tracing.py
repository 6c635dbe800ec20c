"""OpenTelemetry spans for TRACING=1, exported over OTLP/HTTP to JAEGER_URL.

Loaded only when tracing is on, so the default hot path imports none of it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


class Span:
    def __init__(self, span: Any) -> None:
        self._span = span

    def end_with(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        self._span.end()


class Tracer:
    def __init__(self, endpoint: str, hostname: str) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "minimal-service", "host.name": hostname})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
        )
        self.tracer = self.provider.get_tracer("minimal_service")
        self.propagator = TraceContextTextMapPropagator()

    def start(self, request: Any, outgoing: dict[str, str]) -> Span:
        """A server span for the request, made the parent of the outgoing call."""
        parent = self.propagator.extract(request.headers)
        span = self.tracer.start_span(
            f"{request.method} {request.path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        )
        self.propagator.inject(outgoing, context=set_span_in_context(span))
        return Span(span)

    def shutdown(self) -> None:
        self.provider.shutdown()
