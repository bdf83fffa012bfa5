"""The MQTT connections of device-svc, one per intake (mqtt/intake.py): each subscribes to its
channels of every device's up topics, hands each message to a callback without waiting for it, and
reconnects with back-off; commands go out on the critical intake's connection.

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
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt

from device_svc.metrics import MESSAGES_ACK_STALE, MQTT_CONNECTED, MQTT_CONNECTS
from device_svc.mqtt.intake import Intake, subscriptions
from device_svc.settings import Settings
from kit.x509 import client_context

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
        self._client = client
        self._paho = client._client
        self._paho.manual_ack_set(True)
        self.open = True
        self.dropped = False

    def drop(self, reason: str) -> None:
        """End this connection's reading now, as if the broker had closed it (aiomqtt has no public way:
        its message iteration ends when `_disconnected` is done, and leaving the client then skips the
        graceful DISCONNECT a dead socket would never complete). The broker closes the old socket when
        the same client id connects again."""
        disconnected = self._client._disconnected
        if self.open and not disconnected.done():
            self.dropped = True
            disconnected.set_exception(aiomqtt.MqttError(reason))

    def ack(self, mid: int, qos: int) -> None:
        if not self.open:
            MESSAGES_ACK_STALE.inc()
            return
        self._paho.ack(mid, qos)


# (topic, payload, received at, ack, retained)
OnMessage = Callable[[str, bytes, datetime, Ack, bool], None]

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def broker_tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS verifying the broker against MQTT_CA_FILE; None (clear text) only when no CA is set."""
    return client_context(settings.mqtt_ca_file) if settings.mqtt_ca_file is not None else None


class NotConnected(RuntimeError):
    pass


class MqttGateway:
    def __init__(self, settings: Settings, on_message: OnMessage | None = None) -> None:
        self._settings = settings
        self.on_message = on_message
        self._clients: dict[Intake, aiomqtt.Client] = {}
        self._connections: dict[Intake, _Connection] = {}
        self._errors: dict[Intake, str] = {intake: "not connected yet" for intake in Intake}
        self._tls = broker_tls(settings)

    def subscriptions(self, intake: Intake) -> list[str]:
        """The intake's channels of every device; through a shared subscription when instances share
        the load (the broker hands each message to one member of the group)."""
        return subscriptions(intake, self._settings.mqtt_shared_group)

    @property
    def connected(self) -> bool:
        return len(self._clients) == len(Intake)

    @property
    def last_error(self) -> str | None:
        return "; ".join(f"{intake}: {error}" for intake, error in self._errors.items()) or None

    async def ready(self) -> None:
        if not self.connected:
            raise RuntimeError(f"mqtt disconnected: {self.last_error}")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout_s: float = 5.0) -> None:
        client = self._clients.get(Intake.CRITICAL)
        if client is None:
            raise NotConnected(f"mqtt disconnected: {self._errors.get(Intake.CRITICAL)}")
        await asyncio.wait_for(client.publish(topic, payload, qos=qos), timeout_s)

    def _make_client(self, intake: Intake) -> aiomqtt.Client:
        s = self._settings
        return aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value(),
            # A persistent session per intake: each connection's client id is its own.
            identifier=f"{s.mqtt_client_id}-{intake.value}",
            clean_session=s.mqtt_clean_session,
            keepalive=s.mqtt_keepalive_s,
            timeout=10.0,
            socket_options=NODELAY,
            tls_context=self._tls,
            # Unbounded: aiomqtt discards what does not fit, and a discarded QoS 1 message is never
            # acknowledged, so it would hold one of the broker's in-flight slots until we reconnect
            # (seen under the 1,000-device benchmark). The broker's max_inflight_messages bounds it.
            max_queued_incoming_messages=0,
        )

    def _drop_others(self, lost: Intake) -> None:
        """The intakes share one broker: when it closes one of their connections (a restart, a network
        cut) the others reconnect too. Each would notice on its own, but aiomqtt on uvloop can miss the
        close of a socket whose acknowledgement was being written at that moment: seen in a broker-restart
        benchmark, the state intake read nothing for 35 s, until its keepalive, while every cabinet's
        hello waited for it. A connection the broker did keep is only reopened: its unacknowledged
        messages come again and are dropped by msg_id."""
        for intake, connection in list(self._connections.items()):
            if intake is not lost:
                connection.drop(f"the {lost.value} intake lost the broker")

    async def run(self) -> None:
        """Every intake's connection, until cancelled."""
        await self._end_single_connection_session()
        await asyncio.gather(*(self._run(intake) for intake in Intake))

    async def _end_single_connection_session(self) -> None:
        """Before the intakes, device-svc read everything on one persistent session under the bare
        client id; a broker that persists sessions would keep queueing every device message for it.
        Connecting once with a clean session under that id ends it."""
        s = self._settings
        if not s.mqtt_clean_session:
            try:
                async with aiomqtt.Client(
                    s.mqtt_host,
                    s.mqtt_port,
                    username=s.mqtt_username,
                    password=s.mqtt_password.get_secret_value(),
                    identifier=s.mqtt_client_id,
                    clean_session=True,
                    timeout=10.0,
                    tls_context=self._tls,
                ):
                    pass
            except aiomqtt.MqttError as exc:
                log.warning("could not end the single-connection session", extra={"error": repr(exc)})

    async def _run(self, intake: Intake) -> None:
        """Connect, subscribe and read until cancelled; reconnect with jittered back-off."""
        delay = 0.2
        while True:
            client = self._make_client(intake)
            connection = _Connection(client)
            try:
                async with client:
                    for topic in self.subscriptions(intake):
                        await client.subscribe(topic, qos=1)
                    self._clients[intake] = client
                    self._connections[intake] = connection
                    self._errors.pop(intake, None)
                    MQTT_CONNECTED.labels(intake.value).set(1)
                    MQTT_CONNECTS.labels(intake.value).inc()
                    delay = 0.2
                    log.info(
                        "mqtt connected",
                        extra={"host": self._settings.mqtt_host, "port": self._settings.mqtt_port, "intake": intake},
                    )
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                        ack = Ack(connection, message.mid, message.qos)
                        if self.on_message is None:
                            ack()
                        else:
                            self.on_message(str(message.topic), raw, datetime.now(UTC), ack, message.retain)
            except aiomqtt.MqttError as exc:
                self._errors[intake] = repr(exc)
                log.warning(
                    "mqtt connection lost; reconnecting",
                    extra={"error": repr(exc), "retry_in_s": delay, "intake": intake},
                )
                if self._connections.get(intake) is connection and not connection.dropped:
                    self._drop_others(intake)
            finally:
                connection.open = False
                self._clients.pop(intake, None)
                if self._connections.get(intake) is connection:
                    del self._connections[intake]
                MQTT_CONNECTED.labels(intake.value).set(0)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self._settings.mqtt_reconnect_max_s)
