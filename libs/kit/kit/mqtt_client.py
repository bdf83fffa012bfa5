"""A deliberately small MQTT 3.1.1 client on asyncio's Protocol API: the benchmark swarm's tens of
thousands of connections in one process, and device-svc's intakes (issue 9).

aiomqtt (paho underneath) costs a thread-safe client object, several tasks and a socket watcher per
connection, and per received message a paho message object, a matcher walk, a queue and a task switch:
the bench's floor measured an aiomqtt subscriber at 3,484 messages/s where this client received 23,463/s
on the same broker. Here a connection is one transport, one parse buffer and a dict of in-flight packet
ids, and a received PUBLISH is one callback.
Supported: CONNECT (user, password, last will, clean session), PUBLISH QoS 0/1 both ways (incoming
QoS 1 acknowledged at once, or by hand with `manual_ack`), SUBSCRIBE (a refused one raises), PINGREQ
(`keep_alive()` sends them and notices a silent broker), DISCONNECT. Nothing else (no QoS 2, no MQTT 5).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

OnMessage = Callable[[str, bytes], None]
# (topic, payload, qos, packet id (0 for QoS 0), retain): with `manual_ack`, `ack(packet id)` acknowledges it.
OnPublish = Callable[[str, bytes, int, int, bool], None]

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


class MqttLiteError(Exception):
    """Connection refused, lost, or a protocol violation."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _utf8(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!H", len(raw)) + raw


def _blob(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def encode_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def connect_packet(
    client_id: str,
    username: str | None,
    password: str | None,
    *,
    keepalive_s: int = 60,
    clean_session: bool = True,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _utf8(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _utf8(will.topic) + _blob(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _blob(password.encode())
    return packet(CONNECT << 4, _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive_s) + payload)


def publish_packet(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0) -> bytes:
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body)


def subscribe_packet(packet_id: int, topic: str, qos: int = 1) -> bytes:
    return packet((SUBSCRIBE << 4) | 0x02, struct.pack("!H", packet_id) + _utf8(topic) + bytes((qos,)))


def split_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return every complete (first byte, body) packet at the start of `buf`."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    size = len(buf)
    while pos + 2 <= size:
        mult, length, i = 1, 0, pos + 1
        while True:
            if i >= size:
                del buf[:pos]
                return out
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
            if mult > 128**4:
                raise MqttLiteError("malformed remaining length")
        if i + length > size:
            break
        out.append((buf[pos], bytes(buf[i : i + length])))
        pos = i + length
    del buf[:pos]
    return out


class LiteClient(asyncio.Protocol):
    """One connection. `connect()` opens it and waits for CONNACK; `on_message(topic, payload)` is called for
    every PUBLISH received (`on_publish(topic, payload, qos, packet_id, retain)` instead, when given); `closed`
    completes when the connection ends (with the reason as exception). With `manual_ack` a QoS 1 message is
    acknowledged only by `ack(packet_id)`: until then the broker counts it in flight and, on a persistent
    session, sends it again after a reconnect."""

    def __init__(
        self,
        client_id: str,
        on_message: OnMessage | None = None,
        *,
        on_publish: OnPublish | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self.on_publish = on_publish
        self._manual_ack = manual_ack
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._connack: asyncio.Future[int] | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_sent = 0.0
        self.last_received = 0.0
        self._connected_at = 0.0
        # Packets written in one turn of the event loop leave in one socket write (`_write`).
        self._out: list[bytes] = []

    # --------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is a full transport without subclassing asyncio.Transport: an isinstance
        # check here refused every TLS connection under uvloop (device-svc's gateway died on connect).
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.last_received = asyncio.get_running_loop().time()
        self._buf += data
        try:
            packets = split_packets(self._buf)
        except MqttLiteError as exc:
            self._fail(exc)
            return
        for first, body in packets:
            kind = first >> 4
            if kind == PUBLISH:
                self._on_publish(first, body)
            elif kind in (PUBACK, SUBACK):
                fut = self._pending.pop(struct.unpack_from("!H", body)[0], None)
                if fut is not None and not fut.done():
                    if kind == SUBACK and len(body) > 2 and body[2] == 0x80:
                        fut.set_exception(MqttLiteError("subscription refused"))
                    else:
                        fut.set_result(None)
            elif kind == CONNACK and self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1] if len(body) > 1 else 255)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(MqttLiteError(f"connection lost: {exc!r}" if exc else "connection closed"))

    # --------------------------------------------------------------- internals

    def _on_publish(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        (tlen,) = struct.unpack_from("!H", body)
        topic = body[2 : 2 + tlen].decode()
        pos = 2 + tlen
        pid = 0
        if qos:
            pid = (body[pos] << 8) | body[pos + 1]
            pos += 2
            if not self._manual_ack:
                self._write(packet(PUBACK << 4, body[pos - 2 : pos]))
        if self.on_publish is not None:
            self.on_publish(topic, body[pos:], qos, pid, bool(first & 0x01))
        elif self.on_message is not None:
            self.on_message(topic, body[pos:])

    def _fail(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # fire-and-forget publishes need no awaiting; awaiting ones still raise
        self._pending.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(exc)
            self._connack.exception()  # connect() may have given up on it already (a storm's timeouts)
        if not self.closed.done():
            self.closed.set_exception(exc)
            self.closed.exception()  # mark retrieved: nobody has to await it
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _write(self, data: bytes) -> None:
        """Queue a packet; what is queued leaves in one socket write at the end of this turn of the event
        loop. A batch that commits acknowledges hundreds of messages at once, and a write (a send system
        call) each was the top cost of device-svc's MQTT path (issue 9); order is kept, latency is one
        turn of the loop."""
        if self._transport is None:
            raise MqttLiteError("not connected")
        loop = asyncio.get_running_loop()
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(data)
        self.last_sent = loop.time()

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self._transport is not None:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _new_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    # --------------------------------------------------------------- API

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self.closed.done()

    async def connect(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 60,
        will: Will | None = None,
        timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
        clean_session: bool = True,
    ) -> None:
        """`tls`: connect with TLS, verifying the broker's certificate for `host` with that context."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(
                lambda: self, host, port, ssl=tls, server_hostname=host if tls is not None else None
            )
            self._write(
                connect_packet(
                    self.client_id,
                    username,
                    password,
                    keepalive_s=keepalive_s,
                    clean_session=clean_session,
                    will=will,
                )
            )
            code = await self._connack
        self._connected_at = loop.time()
        if code != 0:
            self._fail(MqttLiteError(f"connection refused, CONNACK code {code}"))
            raise MqttLiteError(f"connection refused, CONNACK code {code}")

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Send a PUBLISH; the future completes on PUBACK (at once for QoS 0)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if qos:
            pid = self._new_id()
            self._pending[pid] = fut
            self._write(publish_packet(topic, payload, qos=qos, retain=retain, packet_id=pid))
        else:
            self._write(publish_packet(topic, payload, qos=0, retain=retain))
            fut.set_result(None)
        return fut

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        await self.publish_nowait(topic, payload, qos=qos, retain=retain)

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pid = self._new_id()
        self._pending[pid] = fut
        self._write(subscribe_packet(pid, topic, qos))
        await fut

    def ack(self, packet_id: int) -> bool:
        """Acknowledge a QoS 1 message received with `manual_ack`; False when this connection is gone (the
        packet id means nothing on another one: the broker sends the message again there)."""
        if not self.connected:
            return False
        self._write(packet(PUBACK << 4, struct.pack("!H", packet_id)))
        return True

    def ping(self) -> None:
        self._write(bytes((PINGREQ << 4, 0)))

    async def keep_alive(self, keepalive_s: float) -> None:
        """Until the connection ends: a PINGREQ whenever nothing was sent for half the keepalive, and the
        connection failed when the broker said nothing (not even PINGRESP) for 1.5 keepalives."""
        loop = asyncio.get_running_loop()
        step = max(keepalive_s / 2, 0.05)
        while self.connected:
            await asyncio.sleep(step)
            now = loop.time()
            if now - max(self.last_received, self._connected_at) > 1.5 * keepalive_s:
                self._fail(MqttLiteError("keepalive: the broker fell silent"))
                return
            if self.connected and now - self.last_sent >= step:
                self.ping()

    def disconnect(self) -> None:
        """Graceful DISCONNECT (the broker drops the last will)."""
        if self._transport is not None:
            self._flush()
            self._transport.write(bytes((DISCONNECT << 4, 0)))
            self._transport.close()
            self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self, reason: str = "aborted") -> None:
        """Drop the TCP connection without DISCONNECT (the broker publishes the last will)."""
        self._fail(MqttLiteError(reason))
