"""Traces (issue 17): one trace follows a request through the outbox, Kafka and a consumer, reaches an OTLP/HTTP
collector as protobuf over real HTTP, and tracing costs nothing when it is not configured. A real kit app
(create_service_app: its lifespan, outbox relay and consumer on the real broker and database)."""

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts import Envelope, Topic, new_event
from contracts.events import UserBlocked
from kit import tracing
from kit.app import ConsumerSpec, RuntimeDep, create_service_app
from kit.db import unit_of_work
from kit.kafka import LatencyClass
from kit.logging import JsonFormatter
from kit.settings import ServiceSettings
from kit.testing import (
    eventually,
    kafka_bootstrap,
    kit_database,
    move_group_to_end,
    serve_app,
)

pytestmark = pytest.mark.integration

SERVICE = f"kit-traced-{uuid.uuid4().hex[:6]}"
QUIET = f"kit-untraced-{uuid.uuid4().hex[:6]}"  # its own consumer group: the first app's member may linger


class Collector:
    """An OTLP/HTTP trace receiver on a thread of its own (the exporter posts from its thread and blocks
    the service's shutdown until answered, so the receiver must not need the test's event loop)."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.paths.append(self.path)
                collector.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> dict[str, list[tuple[ProtoSpan, str]]]:
        """Span name -> [(span, its resource's service.name)]."""
        found: dict[str, list[tuple[ProtoSpan, str]]] = {}
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        found.setdefault(span.name, []).append((span, attrs.get("service.name", "")))
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[AsyncEngine]:
    async with kit_database("pb_test_kit_traced") as engine:
        yield engine


def _app(
    engine: AsyncEngine, endpoint: str | None, seen: list[tuple[Envelope, str | None]], service: str = SERVICE
) -> FastAPI:
    settings = ServiceSettings(
        service_name=service,
        pb_env="test",
        database_url=engine.url.render_as_string(hide_password=False),
        kafka_bootstrap=kafka_bootstrap(),
        token_revocation_listener=False,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=1000,
        kafka_fetch_flow_wait_ms=50,
        otel_exporter_otlp_endpoint=endpoint,
    )
    router = APIRouter()

    @router.post("/v1/block/{user_id}", status_code=202)
    async def block(user_id: uuid.UUID, runtime: RuntimeDep) -> dict[str, str]:
        async with unit_of_work(runtime.sessionmaker) as session:
            data = UserBlocked(user_id=user_id, reason="traced", at=datetime.now(UTC))
            envelope = await runtime.publish(session, data, key=str(user_id))
        return {"event_id": str(envelope.event_id)}

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        seen.append((envelope, tracing.current_traceparent()))

    return create_service_app(
        settings,
        title=service,
        routers=[router],
        consumers=lambda _: [
            ConsumerSpec(
                topics=[Topic.USERS.value], handlers={"user.user.blocked": handle}, latency=LatencyClass.CRITICAL
            )
        ],
    )


async def _record_headers(event_id: uuid.UUID) -> list[tuple[str, bytes]]:
    consumer = AIOKafkaConsumer(
        Topic.USERS.value, bootstrap_servers=kafka_bootstrap(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            while True:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    for record in records:
                        if str(event_id).encode() in (record.value or b""):
                            return list(record.headers)
    finally:
        await consumer.stop()


async def test_a_trace_follows_a_request_through_the_outbox_and_kafka_to_a_collector(
    engine: AsyncEngine, collector: Collector
) -> None:
    seen: list[tuple[Envelope, str | None]] = []
    app = _app(engine, collector.url, seen)
    await move_group_to_end(kafka_bootstrap(), f"{SERVICE}.events", [Topic.USERS.value])
    first, second = uuid.uuid4(), uuid.uuid4()
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        await eventually(lambda: _ready(http), timeout=30, what="the consumer")
        assert tracing.enabled()
        plain = await http.post(f"/v1/block/{first}")
        assert plain.status_code == 202
        correlation_id = plain.headers["X-Correlation-ID"]
        # A caller that traces and sends no correlation id: its trace id becomes the correlation id.
        continued = await http.post(
            f"/v1/block/{second}", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
        )
        assert continued.headers["X-Correlation-ID"] == caller_trace

        async def both_handled() -> bool:
            return len({e.data.user_id for e, _ in seen if isinstance(e.data, UserBlocked)} & {first, second}) == 2

        await eventually(both_handled, timeout=30, what="both events consumed")
        headers = await _record_headers(uuid.UUID(plain.json()["event_id"]))
    assert not tracing.enabled()  # the lifespan's end flushed and turned it off

    by_user = {e.data.user_id: (e, current) for e, current in seen if isinstance(e.data, UserBlocked)}
    envelope, consumer_span = by_user[first]
    # The trace id is the correlation id; the event carries the server span, in the envelope and as a header.
    assert envelope.correlation_id == correlation_id
    assert tracing.trace_id_of(envelope.traceparent) == correlation_id
    assert (tracing.HEADER, (envelope.traceparent or "").encode()) in headers
    assert tracing.trace_id_of(consumer_span) == correlation_id

    spans = collector.spans()
    assert set(collector.paths) == {"/v1/traces"}
    servers = {s.trace_id.hex(): (s, name) for s, name in spans["POST /v1/block/{user_id}"]}
    consumers = {s.trace_id.hex(): (s, name) for s, name in spans["process user.user.blocked"]}
    server, service = servers[correlation_id]
    consumer, _ = consumers[correlation_id]
    assert service == SERVICE
    assert server.kind == ProtoSpan.SPAN_KIND_SERVER and consumer.kind == ProtoSpan.SPAN_KIND_CONSUMER
    assert consumer.parent_span_id == server.span_id  # through the outbox and the broker
    assert (envelope.traceparent or "").startswith(f"00-{correlation_id}-{server.span_id.hex()}-")
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["http.route"].string_value == "/v1/block/{user_id}"
    assert attributes["http.response.status_code"].int_value == 202
    # The traced caller's request continues the caller's span.
    server2, _ = servers[caller_trace]
    assert server2.parent_span_id.hex() == caller_span
    assert consumers[caller_trace][0].parent_span_id == server2.span_id


async def test_tracing_off_by_default_adds_nothing(engine: AsyncEngine) -> None:
    seen: list[tuple[Envelope, str | None]] = []
    app = _app(engine, None, seen, QUIET)
    await move_group_to_end(kafka_bootstrap(), f"{QUIET}.events", [Topic.USERS.value])
    user = uuid.uuid4()
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        await eventually(lambda: _ready(http), timeout=30, what="the consumer")
        assert not tracing.enabled()
        answer = await http.post(f"/v1/block/{user}", headers={"traceparent": f"00-{uuid.uuid4().hex}-{'1' * 16}-01"})
        assert "traceparent" not in answer.headers
        assert answer.headers["X-Correlation-ID"] != ""

        async def handled() -> bool:
            return any(isinstance(e.data, UserBlocked) and e.data.user_id == user for e, _ in seen)

        await eventually(handled, timeout=30, what="the event consumed")
        headers = await _record_headers(uuid.UUID(answer.json()["event_id"]))
    [(envelope, current)] = [(e, c) for e, c in seen if isinstance(e.data, UserBlocked) and e.data.user_id == user]
    assert envelope.traceparent is None and current is None and headers == []
    assert b"traceparent" not in envelope.to_bytes()  # the event's bytes are what they were before tracing
    with tracing.span("nothing") as span:
        assert span is None
    assert tracing.current_traceparent() is None and tracing.kafka_headers(None) is None


def test_log_lines_carry_the_trace_beside_the_correlation_id() -> None:
    import logging

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kit.correlation import set_correlation_id

    formatter = JsonFormatter("kit")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    tracing.configure_tracing("kit", endpoint=None, exporter=InMemorySpanExporter())
    try:
        cid = uuid.uuid4().hex
        set_correlation_id(cid)
        with tracing.span("work"):
            line = formatter.format(record)
        assert f'"correlation_id": "{cid}"' in line and f'"trace_id": "{cid}"' in line and '"span_id": "' in line
    finally:
        set_correlation_id(None)
        tracing.shutdown_tracing()
    assert '"trace_id"' not in formatter.format(record)


def test_the_protocol_and_envelope_refuse_a_malformed_traceparent() -> None:
    from pydantic import ValidationError

    from contracts.mqtt import EjectResult

    data = UserBlocked(user_id=uuid.uuid4(), reason="x", at=datetime.now(UTC))
    with pytest.raises(ValidationError):
        new_event(data, key="k", producer="t", traceparent="00-zz-11-01")
    with pytest.raises(ValidationError):
        EjectResult(msg_id="m", ts=1, cmd_id="c", result="ok", traceparent="01-" + "a" * 32 + "-" + "b" * 16 + "-01")
    ok = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert new_event(data, key="k", producer="t", traceparent=ok).traceparent == ok


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200
