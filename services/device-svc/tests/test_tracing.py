"""A borrow's trace crosses the device link (issue 17): billing's span travels with the eject command over Kafka,
device-svc's handling of it sends the eject with a `traceparent`, the cabinet echoes it in its answer over MQTT,
and the span that handles the answer is the parent of the `device.bank.ejected` event billing consumes."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Topic, new_event
from contracts.events import EjectBank
from contracts.mqtt import Eject
from kit import tracing
from kit.testing import eventually

pytestmark = pytest.mark.integration


async def test_an_eject_trace_runs_from_billing_through_the_cabinet_to_bank_ejected(
    service, online, tap, clock, kafka_producer: AIOKafkaProducer
) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("device-svc", endpoint=None, exporter=exporter)
    try:
        cab = await online("CAB-0001")
        cmd = EjectBank(
            command_id=uuid.uuid4(),
            rental_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            code="CAB-0001",
            deadline=datetime.now(UTC) + timedelta(seconds=5),
        )
        with tracing.span("POST /v1/rentals", kind=tracing.SpanKind.SERVER) as billing:
            assert billing is not None
            env = new_event(cmd, key=cmd.code, producer="billing-svc", traceparent=tracing.current_traceparent())
        trace_id = f"{billing.get_span_context().trace_id:032x}"
        await kafka_producer.send_and_wait(
            Topic.DEVICE_COMMANDS.value,
            env.to_bytes(),
            key=cmd.code.encode(),
            headers=tracing.kafka_headers(env.traceparent),
        )
        down = await cab.receive()
        assert isinstance(down, Eject) and tracing.trace_id_of(down.traceparent) == trace_id
        await cab.send(
            "eject_result",
            {
                "type": "eject_result",
                "msg_id": cab.next_id(),
                "ts": clock(),
                "cmd_id": down.cmd_id,
                "result": "ok",
                "slot": down.slot,
                "bank_id": down.bank_id,
                "traceparent": down.traceparent,
            },
        )
        await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
        [ejected] = [e for e in tap.events if e.type == "device.bank.ejected" and e.data.command_id == cmd.command_id]
        assert tracing.trace_id_of(ejected.traceparent) == trace_id

        def spans_of_this_trace() -> dict[str, object]:
            tracing.force_flush()
            return {s.name: s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id}

        async def both() -> dict[str, object] | None:
            found = spans_of_this_trace()
            return found if {"process device.eject_bank", "device eject_result"} <= set(found) else None

        spans = await eventually(both, what="device-svc's spans of the trace")
        process, answer = spans["process device.eject_bank"], spans["device eject_result"]
        assert process.parent.span_id == billing.get_span_context().span_id  # type: ignore[attr-defined]
        # The eject went out under the command's span; the answer's span continues from it (via the cabinet).
        assert (down.traceparent or "").startswith(f"00-{trace_id}-{process.context.span_id:016x}-")  # type: ignore[attr-defined]
        assert answer.parent.span_id == process.context.span_id  # type: ignore[attr-defined]
        assert answer.attributes["pb.device_id"] == "CAB-0001"  # type: ignore[attr-defined]
        assert (ejected.traceparent or "").startswith(f"00-{trace_id}-{answer.context.span_id:016x}-")  # type: ignore[attr-defined]
    finally:
        tracing.shutdown_tracing()
