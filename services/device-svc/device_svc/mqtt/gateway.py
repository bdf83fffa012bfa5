"""The one MQTT connection of device-svc: subscribes to every device's up topics, hands each
message to a callback without waiting for it, publishes commands, and reconnects with back-off.

QoS 1 messages are acknowledged by hand: the callback gets an `Ack` to call once the message's
effect has committed (or it was deliberately refused). Until then the broker keeps the message in
our persistent session and sends it again after a reconnect, so a crash between arrival and commit
loses nothing. An ack only ever goes out on the connection its message came in on: after that
connection dropped the broker redelivers the message anyway (device-svc drops the repeat by its
`msg_id`), and on a new connection the same packet id may name another message."""

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt

from contracts.mqtt import UP_SUBSCRIPTION
from device_svc.metrics import MESSAGES_ACK_STALE, MQTT_CONNECTED
from device_svc.settings import Settings

log = logging.getLogger(__name__)


class Ack:
    """Acknowledges one received message to the broker, once, on the connection it came in on."""

    __slots__ = ("_connection", "_mid", "_qos", "_sent")

    def __init__(self, connection: "_Connection", mid: int, qos: int) -> None:
        self._connection = connection
        self._mid = mid
        self._qos = qos
        self._sent = False

    def __call__(self) -> None:
        if self._sent:
            return
        self._sent = True
        if self._qos > 0:
            self._connection.ack(self._mid, self._qos)


class _Connection:
    """One broker connection (aiomqtt makes a new paho client for each of ours)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        # aiomqtt 2.5 has no public manual-ack API; its paho client is `_client`. paho's
        # manual_ack stops the PUBACK it otherwise sends as soon as a QoS 1 PUBLISH arrives.
        self._paho = client._client
        self._paho.manual_ack_set(True)
        self.open = True

    def ack(self, mid: int, qos: int) -> None:
        if not self.open:
            MESSAGES_ACK_STALE.inc()
            return
        self._paho.ack(mid, qos)


OnMessage = Callable[[str, bytes, datetime, Ack], None]

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class NotConnected(RuntimeError):
    pass


class MqttGateway:
    def __init__(self, settings: Settings, on_message: OnMessage | None = None) -> None:
        self._settings = settings
        self.on_message = on_message
        self._client: aiomqtt.Client | None = None
        self.last_error: str | None = "not connected yet"

    @property
    def subscription(self) -> str:
        """Every device's up topics; through a shared subscription when instances share the load
        (the broker hands each message to one member of the group)."""
        group = self._settings.mqtt_shared_group
        return f"$share/{group}/{UP_SUBSCRIPTION}" if group else UP_SUBSCRIPTION

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def ready(self) -> None:
        if self._client is None:
            raise RuntimeError(f"mqtt disconnected: {self.last_error}")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout_s: float = 5.0) -> None:
        client = self._client
        if client is None:
            raise NotConnected(f"mqtt disconnected: {self.last_error}")
        await asyncio.wait_for(client.publish(topic, payload, qos=qos), timeout_s)

    def _make_client(self) -> aiomqtt.Client:
        s = self._settings
        return aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value(),
            identifier=s.mqtt_client_id,
            clean_session=s.mqtt_clean_session,
            keepalive=s.mqtt_keepalive_s,
            timeout=10.0,
            socket_options=NODELAY,
            # Unbounded: aiomqtt discards what does not fit, and a discarded QoS 1 message is never
            # acknowledged, so it would hold one of the broker's in-flight slots until we reconnect
            # (seen under the 1,000-device benchmark). The broker's max_inflight_messages bounds it.
            max_queued_incoming_messages=0,
        )

    async def run(self) -> None:
        """Connect, subscribe and read until cancelled; reconnect with jittered back-off."""
        delay = 0.2
        while True:
            client = self._make_client()
            connection = _Connection(client)
            try:
                async with client:
                    await client.subscribe(self.subscription, qos=1)
                    self._client = client
                    self.last_error = None
                    MQTT_CONNECTED.set(1)
                    delay = 0.2
                    log.info(
                        "mqtt connected", extra={"host": self._settings.mqtt_host, "port": self._settings.mqtt_port}
                    )
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                        ack = Ack(connection, message.mid, message.qos)
                        if self.on_message is None:
                            ack()
                        else:
                            self.on_message(str(message.topic), raw, datetime.now(UTC), ack)
            except aiomqtt.MqttError as exc:
                self.last_error = repr(exc)
                log.warning("mqtt connection lost; reconnecting", extra={"error": repr(exc), "retry_in_s": delay})
            finally:
                connection.open = False
                self._client = None
                MQTT_CONNECTED.set(0)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self._settings.mqtt_reconnect_max_s)
