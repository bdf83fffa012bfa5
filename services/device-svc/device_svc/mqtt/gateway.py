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
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

from device_svc.metrics import MESSAGES_ACK_STALE, MQTT_CONNECTED, MQTT_CONNECTS
from device_svc.mqtt.intake import Intake, subscriptions
from device_svc.settings import Settings
from kit.mqtt_client import LiteClient, MqttLiteError
from kit.x509 import client_context

log = logging.getLogger(__name__)

# A connection failed: refused, lost, timed out, or its TLS handshake did not verify.
CONNECTION_ERRORS = (MqttLiteError, OSError, TimeoutError)


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
            self._connection.ack(self._mid)


class _Connection:
    """One broker connection: the kit's small MQTT client (kit/mqtt_client.py), acknowledging by hand.
    Every message is handed over as it arrives, also those the broker kept for our session and sends
    before the subscriptions are answered."""

    def __init__(self, client_id: str, handler: "Callable[[], OnMessage | None]") -> None:
        self.client = LiteClient(client_id, on_publish=self._received, manual_ack=True)
        self._handler = handler
        self.open = True
        self.dropped = False

    def _received(self, topic: str, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        ack = Ack(self, mid, qos)
        on_message = self._handler()
        if on_message is None:
            ack()
        else:
            on_message(topic, payload, datetime.now(UTC), ack, retain)

    def drop(self, reason: str) -> None:
        """End this connection now, as if the broker had closed it; its reader reconnects."""
        if self.open and self.client.connected:
            self.dropped = True
            self.client.abort(reason)

    def ack(self, mid: int) -> None:
        if not self.open or not self.client.ack(mid):
            MESSAGES_ACK_STALE.inc()


# (topic, payload, received at, ack, retained)
OnMessage = Callable[[str, bytes, datetime, Ack, bool], None]


def broker_tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS verifying the broker against MQTT_CA_FILE; None (clear text) only when no CA is set."""
    return client_context(settings.mqtt_ca_file) if settings.mqtt_ca_file is not None else None


class NotConnected(RuntimeError):
    pass


class MqttGateway:
    def __init__(self, settings: Settings, on_message: OnMessage | None = None) -> None:
        self._settings = settings
        self.on_message = on_message
        self._clients: dict[Intake, LiteClient] = {}
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

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float = 5.0
    ) -> None:
        client = self._clients.get(Intake.CRITICAL)
        if client is None:
            raise NotConnected(f"mqtt disconnected: {self._errors.get(Intake.CRITICAL)}")
        await asyncio.wait_for(client.publish(topic, payload, qos=qos, retain=retain), timeout_s)

    async def _connect(self, client: LiteClient, *, clean_session: bool) -> None:
        s = self._settings
        await client.connect(
            s.mqtt_host,
            s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value(),
            keepalive_s=s.mqtt_keepalive_s,
            timeout_s=10.0,
            tls=self._tls,
            clean_session=clean_session,
        )

    def _drop_others(self, lost: Intake) -> None:
        """The intakes share one broker: when it closes one of their connections (a restart, a network
        cut) the others reconnect too. Each would notice on its own, but a close can go unnoticed until
        the keepalive: seen in a broker-restart benchmark (then under aiomqtt on uvloop), the state intake
        read nothing for 35 s while every cabinet's hello waited for it. A connection the broker did keep
        is only reopened: its unacknowledged messages come again and are dropped by msg_id."""
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
        if not self._settings.mqtt_clean_session:
            client = LiteClient(self._settings.mqtt_client_id)
            try:
                await self._connect(client, clean_session=True)
                client.disconnect()
            except Exception as exc:
                log.warning("could not end the single-connection session", extra={"error": repr(exc)})

    async def _run(self, intake: Intake) -> None:
        """Connect, subscribe and read until cancelled; reconnect with jittered back-off."""
        delay = 0.2
        while True:
            # A persistent session per intake: each connection's client id is its own.
            connection = _Connection(f"{self._settings.mqtt_client_id}-{intake.value}", lambda: self.on_message)
            client = connection.client
            keepalive: asyncio.Task[None] | None = None
            try:
                await self._connect(client, clean_session=self._settings.mqtt_clean_session)
                keepalive = asyncio.create_task(client.keep_alive(self._settings.mqtt_keepalive_s))
                for topic in self.subscriptions(intake):
                    await asyncio.wait_for(client.subscribe(topic, qos=1), 10.0)
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
                await client.closed
                raise MqttLiteError("connection closed")
            except Exception as exc:
                # Any error, not only a lost connection: an intake that stops for good (the client once
                # failed an assertion on uvloop's TLS transport) leaves device-svc deaf while it looks alive.
                self._errors[intake] = repr(exc)
                log.log(
                    logging.WARNING if isinstance(exc, CONNECTION_ERRORS) else logging.ERROR,
                    "mqtt connection lost; reconnecting",
                    extra={"error": repr(exc), "retry_in_s": delay, "intake": intake},
                    exc_info=not isinstance(exc, CONNECTION_ERRORS),
                )
                if self._connections.get(intake) is connection and not connection.dropped:
                    self._drop_others(intake)
            finally:
                connection.open = False
                if keepalive is not None:
                    keepalive.cancel()
                client.disconnect()  # a graceful DISCONNECT when still open (shutdown); the session stays
                self._clients.pop(intake, None)
                if self._connections.get(intake) is connection:
                    del self._connections[intake]
                MQTT_CONNECTED.labels(intake.value).set(0)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self._settings.mqtt_reconnect_max_s)
