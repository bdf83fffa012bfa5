"""The kit's small MQTT client (kit/mqtt_client.py) as device-svc's intakes use it: acknowledgements by hand
on a persistent session, refused subscriptions, and the keepalive. Against the test stack's Mosquitto (TLS,
service account), and small TCP servers for what Mosquitto does not do on demand."""

import asyncio
import os
import uuid

import pytest

from kit.mqtt_client import CONNACK, PINGREQ, SUBACK, SUBSCRIBE, LiteClient, MqttLiteError, split_packets
from kit.x509 import client_context

Received = tuple[str, bytes, int, int, bool]


async def connect(client: LiteClient, *, clean_session: bool = True) -> None:
    ca = os.environ.get("MQTT_CA_FILE")
    await client.connect(
        os.environ["MQTT_HOST"],
        int(os.environ["MQTT_PORT"]),
        username=os.environ["MQTT_USERNAME"],
        password=os.environ["MQTT_PASSWORD"],
        tls=client_context(ca) if ca else None,
        clean_session=clean_session,
    )


async def test_a_message_acknowledged_by_hand_comes_again_until_acknowledged():
    topic = f"pb/v1/devices/KIT-{uuid.uuid4().hex[:8]}/cmd"
    subscriber_id = f"kit-test-sub-{uuid.uuid4().hex[:8]}"
    got: asyncio.Queue[Received] = asyncio.Queue()

    def subscriber() -> LiteClient:
        return LiteClient(subscriber_id, on_publish=lambda *message: got.put_nowait(message), manual_ack=True)

    first = subscriber()
    await connect(first, clean_session=False)
    await first.subscribe(topic, qos=1)
    publisher = LiteClient(f"kit-test-pub-{uuid.uuid4().hex[:8]}")
    await connect(publisher)
    try:
        await publisher.publish(topic, b"one", qos=1)
        assert (await asyncio.wait_for(got.get(), 5))[:3] == (topic, b"one", 1)
        first.abort()  # not acknowledged: the broker keeps it for the session
        assert not first.ack(1), "an ack on a closed connection is refused"

        second = subscriber()
        await connect(second, clean_session=False)
        redelivered = await asyncio.wait_for(got.get(), 5)
        assert redelivered[:3] == (topic, b"one", 1)
        assert second.ack(redelivered[3])
        second.disconnect()

        await publisher.publish(topic, b"marker", qos=1)
        third = subscriber()
        await connect(third, clean_session=False)
        # The acknowledged message is gone: the next one is the marker published after it.
        assert (await asyncio.wait_for(got.get(), 5))[:2] == (topic, b"marker")
        third.disconnect()
        ended = subscriber()
        await connect(ended, clean_session=True)  # ends the session
        ended.disconnect()
    finally:
        publisher.disconnect()


async def test_a_subscription_the_broker_refuses_raises():
    """(Mosquitto 2.0 grants any subscription and filters by ACL on delivery; other brokers answer 0x80.)"""

    async def refusing_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        while data := await reader.read(65536):
            buf += data
            for first, body in split_packets(buf):
                if first >> 4 == SUBSCRIBE:
                    writer.write(bytes((SUBACK << 4, 3)) + body[:2] + b"\x80")
                else:
                    writer.write(bytes((CONNACK << 4, 2, 0, 0)))
            await writer.drain()

    server = await asyncio.start_server(refusing_broker, "127.0.0.1", 0)
    client = LiteClient("kit-refused")
    try:
        await client.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        with pytest.raises(MqttLiteError, match="subscription refused"):
            await asyncio.wait_for(client.subscribe("any/topic", qos=1), 5)
    finally:
        client.disconnect()
        server.close()
        await server.wait_closed()


async def test_keep_alive_pings_when_idle_and_fails_when_the_broker_falls_silent():
    pings = 0
    answer = asyncio.Event()

    async def silent_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """CONNACK, then it counts PINGREQs and answers none (once `answer` is set it stops reading)."""
        nonlocal pings
        buf = bytearray()
        while data := await reader.read(65536):
            buf += data
            for first, _ in split_packets(buf):
                if first >> 4 == PINGREQ:
                    pings += 1
                    answer.set()
                else:
                    writer.write(bytes((CONNACK << 4, 2, 0, 0)))
            await writer.drain()

    server = await asyncio.start_server(silent_broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = LiteClient("kit-keepalive")
        await client.connect("127.0.0.1", port, keepalive_s=1)
        keeper = asyncio.create_task(client.keep_alive(0.2))
        await asyncio.wait_for(answer.wait(), 5)
        assert pings >= 1
        with pytest.raises(MqttLiteError, match="fell silent"):
            await asyncio.wait_for(client.closed, 5)
        await asyncio.wait_for(keeper, 1)
        assert not client.connected
    finally:
        server.close()
        await server.wait_closed()


def test_a_tls_connection_under_uvloop_publishes_and_receives():
    """uvicorn runs device-svc on uvloop, whose TLS transport does not subclass asyncio.Transport: the client
    once asserted it did, and device-svc never became ready. Here a whole round trip over the test stack's TLS
    listener, on a uvloop event loop of its own."""
    uvloop = pytest.importorskip("uvloop")
    assert os.environ.get("MQTT_CA_FILE"), "the test stack's broker is TLS only"

    async def round_trip() -> tuple[str, bytes, int, int, bool]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        topic = f"pb/v1/devices/KIT-{uuid.uuid4().hex[:8]}/cmd"
        got: asyncio.Queue[Received] = asyncio.Queue()
        subscriber = LiteClient(f"kit-uvloop-sub-{uuid.uuid4().hex[:8]}", on_publish=lambda *m: got.put_nowait(m))
        publisher = LiteClient(f"kit-uvloop-pub-{uuid.uuid4().hex[:8]}")
        await connect(subscriber)
        await connect(publisher)
        try:
            await subscriber.subscribe(topic, qos=1)
            await asyncio.wait_for(publisher.publish(topic, b"over tls", qos=1), 5)
            return await asyncio.wait_for(got.get(), 5)
        finally:
            publisher.disconnect()
            subscriber.disconnect()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        topic, payload, qos, _, retain = runner.run(round_trip())
    assert (payload, qos, retain) == (b"over tls", 1, False)
    assert topic.endswith("/cmd")
