"""Nothing lost: device-svc acknowledges a QoS 1 message only once its effect committed (or it was
deliberately refused), on the connection it came in on. Each test has a broker of its own and a
device-svc with a persistent session, so the broker keeps what was not acknowledged."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from contracts.mqtt import UpChannel, up_topic
from device_svc.main import create_app
from device_svc.mqtt.gateway import MqttGateway
from kit.db import make_engine
from kit.mqtt_client import LiteClient
from kit.testing import app_client, eventually

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def publisher(broker: Any, password: str) -> AsyncIterator[aiomqtt.Client]:
    """Publishes as the service account (allowed on every device's topics)."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.tls,
        username="device-svc",
        password=password,
        identifier=f"pub-{uuid.uuid4().hex[:6]}",
    ) as client:
        yield client


async def scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = make_engine(database_url, 1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar_one()
    finally:
        await engine.dispose()


async def inbound(database_url: str, device_id: str, msg_id: str) -> int:
    return int(
        await scalar(
            database_url,
            "SELECT count(*) FROM inbound_messages WHERE device_id = :d AND msg_id = :m",
            d=device_id,
            m=msg_id,
        )
    )


async def outbox_count(database_url: str, event_type: str, field: str, value: str) -> int:
    return int(
        await scalar(
            database_url,
            "SELECT count(*) FROM outbox WHERE event_type = :t "
            "AND convert_from(payload, 'UTF8')::jsonb -> 'data' ->> :f = :v",
            t=event_type,
            f=field,
            v=value,
        )
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def persistent_settings(settings_factory, group_factory, private_broker):
    """Settings of a device-svc on the private broker with a persistent session (as deployed)."""

    async def make() -> Any:
        return settings_factory(await group_factory("device-svc-delivery")).model_copy(
            update={
                "mqtt_host": private_broker.host,
                "mqtt_port": private_broker.port,
                "mqtt_ca_file": private_broker.ca_file,
                "mqtt_client_id": f"device-svc-delivery-{uuid.uuid4().hex[:6]}",
                "mqtt_clean_session": False,
            }
        )

    return make


def return_report(msg_id: str, clock) -> bytes:
    # PB-000003 is seeded in CAB-0001; reported back into CAB-0002: the return moves it there.
    report = {"type": "return", "v": 1, "msg_id": msg_id, "ts": clock(), "slot": 8, "bank_id": "PB-000003"}
    return json.dumps(report).encode()


async def test_message_not_committed_is_redelivered_after_restart_and_lands_once(
    fleet,
    database_url,
    private_broker,
    persistent_settings,
    service_password,
    readiness,
    clock,
    lock_cabinets,
    lock_waiters,
):
    settings = await persistent_settings()
    msg_id = f"ret-{uuid.uuid4().hex[:8]}"
    async with lock_cabinets("CAB-0002"):
        async with app_client(create_app(settings)) as client:
            await readiness(client)
            async with publisher(private_broker, service_password) as device:
                await device.publish(up_topic("CAB-0002", UpChannel.RETURN), return_report(msg_id, clock), qos=1)
            await eventually(lock_waiters, what="the return's handling to wait on the lock")
        # device-svc stopped (a crash would do the same) before the return committed.
    assert await inbound(database_url, "CAB-0002", msg_id) == 0

    # The same client id and persistent session: the broker sends the unacknowledged return again.
    async with app_client(create_app(settings)) as client:
        await readiness(client)
        await eventually(lambda: inbound(database_url, "CAB-0002", msg_id), what="the redelivered return")
        bank = await scalar(database_url, "SELECT cabinet_id || '/' || slot_no FROM banks WHERE id = 'PB-000003'")
        assert bank == "CAB-0002/8"
        assert await outbox_count(database_url, "device.bank.returned", "report_id", f"CAB-0002/{msg_id}") == 1


async def test_rejected_message_is_acknowledged_and_not_redelivered(
    fleet, database_url, private_broker, persistent_settings, service_password, readiness, clock
):
    settings = await persistent_settings()
    hello_topic = up_topic("CAB-0003", UpChannel.HELLO)
    async with app_client(create_app(settings)) as client:
        await readiness(client)
        async with publisher(private_broker, service_password) as device:
            await device.publish(hello_topic, b'{"type":"hello","v":1}', qos=1)  # invalid: refused
        await eventually(
            lambda: outbox_count(database_url, "device.message.rejected", "mqtt_topic", hello_topic),
            what="the rejection",
        )

    async with app_client(create_app(settings)) as client:
        await readiness(client)
        # On resume the broker first sends what was not acknowledged; this message of the same device
        # comes after it, and one device's messages are handled in arrival order.
        sentinel = f"hb-{uuid.uuid4().hex[:8]}"
        heartbeat = {"type": "heartbeat", "v": 1, "msg_id": sentinel, "ts": clock()}
        async with publisher(private_broker, service_password) as device:
            await device.publish(up_topic("CAB-0003", UpChannel.HEARTBEAT), json.dumps(heartbeat).encode(), qos=1)
        await eventually(lambda: inbound(database_url, "CAB-0003", sentinel), what="the heartbeat after restart")
    assert await outbox_count(database_url, "device.message.rejected", "mqtt_topic", hello_topic) == 1


async def test_ack_never_goes_to_a_newer_connection(
    fleet,
    database_url,
    private_broker,
    restart_broker,
    persistent_settings,
    service_password,
    readiness,
    clock,
    lock_cabinets,
    lock_waiters,
):
    """The connection drops while a message is being handled; it commits afterwards. Its ack is not
    sent (the packet id means nothing on the new connection); the broker's redelivery is dropped as
    a replay and acknowledged there. The effect lands once."""
    settings = await persistent_settings()
    msg_id = f"ret-{uuid.uuid4().hex[:8]}"
    stale = metric("pb_device_messages_ack_stale_total")
    duplicates = metric("pb_device_messages_rejected_total", reason="duplicate")
    app = create_app(settings)
    async with app_client(app) as client:
        await readiness(client)
        gateway = app.state.runtime.extras["gateway"]
        async with lock_cabinets("CAB-0002"):
            async with publisher(private_broker, service_password) as device:
                await device.publish(up_topic("CAB-0002", UpChannel.RETURN), return_report(msg_id, clock), qos=1)
            await eventually(lock_waiters, what="the return's handling to wait on the lock")
            restart_broker(private_broker)  # keeps the session and the unacknowledged return

            async def reconnected() -> bool:
                return bool(gateway.connected)

            await eventually(reconnected, what="device-svc to reconnect")
        # The lock is released: the first delivery commits, then the redelivery is a replay.
        await eventually(lambda: inbound(database_url, "CAB-0002", msg_id), what="the return")

        async def replay_dropped() -> bool:
            return metric("pb_device_messages_rejected_total", reason="duplicate") > duplicates

        await eventually(replay_dropped, what="the redelivered return to be dropped as a replay")
        assert metric("pb_device_messages_ack_stale_total") > stale
        assert await outbox_count(database_url, "device.bank.returned", "report_id", f"CAB-0002/{msg_id}") == 1


async def take_over_critical(broker: Any, settings: Any, password: str) -> None:
    """Connect with the critical intake's client id: the broker drops device-svc's connection (a takeover)."""
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.tls,
        username="device-svc",
        password=password,
        identifier=f"{settings.mqtt_client_id}-critical",
        clean_session=False,
    ):
        pass


async def test_when_the_broker_drops_one_intake_every_intake_reconnects(
    private_broker, persistent_settings, service_password, readiness
):
    """A broker restart closes every connection, but aiomqtt on uvloop can miss a close (the state
    intake once read nothing for 35 s while every cabinet's hello waited): so the loss of one intake's
    connection reopens the others. Here the broker drops only the critical one (its client id connects
    again from elsewhere, a takeover); the state and telemetry intakes reconnect too."""
    settings = await persistent_settings()
    app = create_app(settings)
    async with app_client(app) as client:
        await readiness(client)
        gateway = app.state.runtime.extras["gateway"]
        before = {i: metric("pb_device_mqtt_connects_total", intake=i) for i in ("critical", "state", "telemetry")}
        await take_over_critical(private_broker, settings, service_password)

        async def all_reconnected() -> bool:
            now = {i: metric("pb_device_mqtt_connects_total", intake=i) for i in before}
            return gateway.connected and all(now[i] > before[i] for i in before)

        await eventually(all_reconnected, what="every intake to reconnect")


async def test_an_intake_keeps_reconnecting_after_an_unexpected_error(settings):
    """Not only a lost connection: any error of a connection attempt (the client once failed an assertion on
    uvloop's TLS transport) is retried with back-off, instead of ending the intake for good."""
    failures: list[str] = []

    class FailingOnce(MqttGateway):
        async def _connect(self, client: LiteClient, *, clean_session: bool) -> None:
            if client.client_id.endswith("-telemetry") and not failures:
                failures.append(client.client_id)
                raise AssertionError("a bug of the client, not a lost connection")
            await super()._connect(client, clean_session=clean_session)

    gateway = FailingOnce(settings.model_copy(update={"mqtt_client_id": f"device-svc-retry-{uuid.uuid4().hex[:8]}"}))
    task = asyncio.create_task(gateway.run())
    try:

        async def connected() -> bool:
            return gateway.connected

        await eventually(connected, timeout=15, what="every intake connected after the failed attempt")
        assert failures, "the telemetry intake's first attempt failed"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_retained_status_replayed_on_subscribe_writes_nothing_when_it_is_current(
    fleet, private_broker, persistent_settings, service_password, readiness, database_url
):
    """The broker replays every retained `status` whenever device-svc subscribes again (each reconnect;
    after a broker restart, the whole fleet's): one that matches the registry is no sign of life and
    no news, so nothing is written; one that does not goes the normal way."""
    settings = await persistent_settings()
    online = b'{"type":"status","v":1,"online":true}'
    app = create_app(settings)
    async with app_client(app) as client:
        await readiness(client)
        async with publisher(private_broker, service_password) as device:
            await device.publish(up_topic("CAB-0003", UpChannel.STATUS), online, qos=1, retain=True)

        async def last_seen() -> Any:
            return await scalar(database_url, "SELECT max(last_seen_at) FROM cabinets WHERE id = 'CAB-0003' AND online")

        await eventually(last_seen, what="CAB-0003 online")
        seen = await last_seen()
        current = metric("pb_device_retained_status_current_total")
        await take_over_critical(private_broker, settings, service_password)

        async def replay_skipped() -> bool:
            return metric("pb_device_retained_status_current_total") > current

        await eventually(replay_skipped, what="the replayed status to be found current")
        assert await last_seen() == seen
        # Shown offline meanwhile (say, by silence): the replayed `online` is news again and is applied.
        engine = make_engine(database_url, 1)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE cabinets SET online = false WHERE id = 'CAB-0003'"))
        finally:
            await engine.dispose()
        await take_over_critical(private_broker, settings, service_password)
        await eventually(last_seen, what="the replayed online status to be applied")
