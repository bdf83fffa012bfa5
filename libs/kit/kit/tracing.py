"""OpenTelemetry traces across HTTP, Kafka and MQTT, exported with OTLP when configured, off otherwise.

Off (no `otel_exporter_otlp_endpoint`), every function here returns at its first line: no tracer, no
span objects, no context lookups, no W3C strings in events or device commands. On, one trace follows
a user's action the way the correlation id always has:

- HTTP: a server span per request, continuing the caller's `traceparent` header; the kit's HTTP
  client sends the current one.
- Kafka: an event written while a span is current carries its `traceparent` in the envelope (it
  survives the outbox, which may publish much later and from another replica) and as a Kafka record
  header; a consumer's span continues it (the header first, the envelope otherwise).
- MQTT: a command sent to a device carries `traceparent`; the device echoes it in its answer, and
  the span that handles the answer (and the events it writes) continues the trace.

The correlation id stays the name people search logs by. A trace started at the edge takes the
correlation id as its trace id when that is 32 hex digits (the kit's own ids are), so the two are
the same string; logs carry both, and a request that brings a `traceparent` but no correlation id
gets the trace id as its correlation id.

One service per process: the tracer and its exporter are process-wide (configure, then shutdown).
"""

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.envelope import TRACEPARENT_PATTERN
from kit.correlation import get_correlation_id

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.id_generator import IdGenerator

log = logging.getLogger(__name__)

HEADER = "traceparent"
# The envelope's field in an outbox row's JSON (the relay reads it without parsing the whole event).
_IN_PAYLOAD = re.compile(rb'"traceparent":"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')
_PROPAGATOR = TraceContextTextMapPropagator()

_tracer: trace.Tracer | None = None
_provider: "TracerProvider | None" = None


def _correlation_trace_ids() -> "IdGenerator":
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class CorrelationTraceIds(RandomIdGenerator):
        """A new trace takes the current correlation id as its trace id when it is 32 hex digits."""

        def generate_trace_id(self) -> int:
            cid = get_correlation_id()
            if cid is not None and len(cid) == 32:
                try:
                    value = int(cid, 16)
                except ValueError:
                    value = 0
                if value:
                    return value
            return super().generate_trace_id()

    return CorrelationTraceIds()


def configure_tracing(
    service: str,
    *,
    endpoint: str | None,
    sample_ratio: float = 1.0,
    exporter: "SpanExporter | None" = None,
) -> bool:
    """Turn tracing on for this process when an OTLP endpoint (or, in tests, an exporter) is given.
    `endpoint` is the collector's base URL (`http://collector:4318`); spans go to `<endpoint>/v1/traces`."""
    global _tracer, _provider
    if endpoint is None and exporter is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", timeout=5)
    shutdown_tracing()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        id_generator=_correlation_trace_ids(),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("pb-kit")
    log.info("tracing on", extra={"otlp_endpoint": endpoint, "sample_ratio": sample_ratio})
    return True


def shutdown_tracing() -> None:
    """Flush what is buffered and turn tracing off."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_ms: int = 5_000) -> bool:
    """Export what is buffered now (blocking); True when off or when everything went out."""
    return True if _provider is None else _provider.force_flush(timeout_ms)


def enabled() -> bool:
    return _tracer is not None


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, or None (tracing off, or no span)."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, for log lines; None when off or outside a span."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def trace_id_of(traceparent: str | None) -> str | None:
    if traceparent is None or not re.fullmatch(TRACEPARENT_PATTERN, traceparent):
        return None
    return traceparent[3:35]


def traceparent_in_payload(payload: bytes) -> str | None:
    """The `traceparent` of a serialised envelope (an outbox row), without parsing it."""
    if _tracer is None:
        return None
    found = _IN_PAYLOAD.search(payload)
    return found.group(1).decode() if found else None


def kafka_headers(traceparent: str | None) -> list[tuple[str, bytes]] | None:
    return [(HEADER, traceparent.encode())] if traceparent else None


def traceparent_from_headers(headers: Any) -> str | None:
    """From a Kafka record's headers (a sequence of (key, bytes))."""
    for key, value in headers or ():
        if key == HEADER and value:
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def inject(carrier: dict[str, str]) -> None:
    """Add the current `traceparent` to outgoing HTTP headers."""
    if _tracer is not None:
        _PROPAGATOR.inject(carrier)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span | None]:
    """A span, current for the block: a child of `parent` (a W3C traceparent) when given and valid,
    else of the current span, else a new trace. Yields None, at no cost, when tracing is off."""
    if _tracer is None:
        yield None
        return
    context = _PROPAGATOR.extract({HEADER: parent}) if parent else None
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes) as current:
        yield current


def mark_error(current: Span | None, description: str) -> None:
    if current is not None:
        current.set_status(Status(StatusCode.ERROR, description))


def mark_current_error(description: str) -> None:
    """Mark the current span failed (an event parked after its retries, say); nothing when off."""
    if _tracer is not None:
        mark_error(trace.get_current_span(), description)


__all__ = [
    "HEADER",
    "TRACEPARENT_PATTERN",
    "SpanKind",
    "configure_tracing",
    "current_ids",
    "current_traceparent",
    "enabled",
    "force_flush",
    "inject",
    "kafka_headers",
    "mark_current_error",
    "mark_error",
    "shutdown_tracing",
    "span",
    "trace_id_of",
    "traceparent_from_headers",
    "traceparent_in_payload",
]
