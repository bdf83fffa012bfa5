"""What every emulated device shares: its MQTT connection lifecycle (connect with its own credentials
and last will, announce, serve commands and timers, reconnect with jittered exponential back-off),
its clock and message ids, abrupt and clean disconnects, and the generic message faults (lost,
duplicated and delayed up messages). `Cabinet` and `BankModule` add what they say and do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from contracts.mqtt import Status, UpChannel, UpMessage, cmd_topic, up_topic
from device_emulator.aio import cancel_and_wait

log = logging.getLogger("device_emulator.device")

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ONLINE = Status(online=True).model_dump_json().encode()
OFFLINE = Status(online=False).model_dump_json().encode()


@dataclass(slots=True)
class MessageFaults:
    """Faults of the up messages (all but the retained `status`). `drop_messages`: lost (never
    sent); `duplicate`: each is sent this many times with the same msg_id (a QoS 1 redelivery);
    `delay_s`: each is sent this late (newer ones overtake it)."""

    drop_messages: bool = False
    duplicate: int = 1
    delay_s: float = 0.0

    def set(self, *, drop_messages: bool | None, duplicate: int | None, delay_s: float | None) -> None:
        if drop_messages is not None:
            self.drop_messages = drop_messages
        if duplicate is not None:
            self.duplicate = max(1, duplicate)
        if delay_s is not None:
            self.delay_s = max(0.0, delay_s)


class Device:
    """One device on its own MQTT connection. `start()` runs it in the background until `stop()`.

    Subclasses implement `_hello` (what to say once connected), `_on_message` (a command) and
    `_tick` (timed messages; returns the loop time of the next one), and set `faults`."""

    kind = "device"
    faults: MessageFaults
    announces_status = True  # the retained `status` of the platform's protocol (a maker's may have none)

    def __init__(
        self,
        device_id: str,
        password: str,
        host: str,
        port: int,
        *,
        clock_skew_ms: int = 0,
        keepalive_s: int = 60,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        op_timeout_s: float = 10.0,
        clean_session: bool = True,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.device_id = device_id
        self.tls = tls  # verifies the broker (device_emulator/tls.py); None: clear text
        self.password = password
        self.host = host
        self.port = port
        self.clock_skew_ms = clock_skew_ms
        self.keepalive_s = keepalive_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.op_timeout_s = op_timeout_s
        self.clean_session = clean_session
        self._rng = rng or random.Random()
        self.stats: dict[str, int] = {"connects": 0, "connect_failures": 0, "dropped": 0}
        self.last_error: str | None = None
        self._boot = secrets.token_hex(4)  # never from a seed: a restarted device must not repeat msg_ids
        self._seq = itertools.count(1)
        self._client: aiomqtt.Client | None = None
        self._online = asyncio.Event()
        self._offline = asyncio.Event()
        self._offline.set()
        self._want_online = asyncio.Event()
        self._stopping = False
        self._entered = False
        self._task: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ clock, ids, views

    def device_now_ms(self) -> int:
        """The device clock: real time plus the configured skew, epoch milliseconds."""
        return int(time.time() * 1000) + self.clock_skew_ms

    def new_msg_id(self) -> str:
        return f"{self._boot}-{next(self._seq)}"

    @property
    def online(self) -> bool:
        """Connected and announced."""
        return self._online.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _log(self, level: int, msg: str, **extra: Any) -> None:
        log.log(level, msg, extra={f"{self.kind}_id": self.device_id, **extra})

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the device task (returns at once; see `wait_online`)."""
        if self.running:
            return
        self._stopping = False
        self._want_online.set()
        self._task = asyncio.create_task(self._run(), name=f"{self.kind}:{self.device_id}")

    async def wait_online(self, timeout_s: float = 10.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._online.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Clean shutdown: retained `online: false`, then a graceful DISCONNECT (no last will)."""
        self._stopping = True
        client = self._client
        if client is not None and self.online and self.announces_status:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(self._status_topic, OFFLINE, qos=1, retain=True, timeout=2.0)
        for pending in list(self._delayed):
            await cancel_and_wait(pending)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self._online.clear()
        self._offline.set()

    async def go_offline(self, timeout_s: float = 5.0) -> None:
        """Lose the connection abruptly (no DISCONNECT), so the broker publishes the last will; stay
        offline until `go_online()`."""
        self._want_online.clear()
        self._abort_socket()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._offline.wait()
        self._log(logging.INFO, "went offline")

    async def go_online(self, *, wait: bool = True, timeout_s: float = 10.0) -> bool:
        self._want_online.set()
        if not self.running:
            await self.start()
        if not wait:
            return self.online
        return await self.wait_online(timeout_s)

    @property
    def _status_topic(self) -> str:
        return up_topic(self.device_id, UpChannel.STATUS)

    def _raw_socket(self) -> socket.socket | None:
        client = self._client
        if client is None:
            return None
        # aiomqtt keeps the paho client as `_client`; paho's socket() is the live TCP socket.
        sock = client._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def _abort_socket(self) -> None:
        sock = self._raw_socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def _run(self) -> None:
        backoff = self.backoff_initial_s
        while not self._stopping:
            await self._want_online.wait()
            if self._stopping:
                break
            self._entered = False
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
                if not self._entered:
                    self.stats["connect_failures"] += 1
                self._log(logging.WARNING, "mqtt connection lost or refused", error=self.last_error)
            except Exception as exc:  # a bug must not kill one device silently in a swarm
                self.last_error = repr(exc)
                log.exception("device task error", extra={f"{self.kind}_id": self.device_id})
            finally:
                self._client = None
                self._online.clear()
                self._offline.set()
            if self._stopping:
                break
            if not self._want_online.is_set():
                backoff = self.backoff_initial_s
                continue
            if self._entered:
                backoff = self.backoff_initial_s
            delay = backoff * self._rng.uniform(0.5, 1.0)
            backoff = min(backoff * 2, self.backoff_max_s)
            await asyncio.sleep(delay)

    def _new_client(self, *, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
        """This device's connection, as every kind of device makes it: its own credentials and client id,
        the broker verified over TLS, Nagle off (QoS 1 acks otherwise wait for delayed ACKs)."""
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.device_id,
            password=self.password,
            identifier=self.device_id,
            will=will,
            clean_session=self.clean_session,
            keepalive=self.keepalive_s,
            timeout=self.op_timeout_s,
            socket_options=[_NODELAY],
            tls_context=self.tls,
        )

    async def _session(self) -> None:
        """One connection: connect, announce, serve commands and timers until it drops. Sets
        `_entered` once the broker accepted us (so the back-off restarts small)."""
        client = self._new_client(will=aiomqtt.Will(self._status_topic, OFFLINE, qos=1, retain=True))
        async with client:
            self._entered = True
            self._client = client
            self._offline.clear()
            try:
                if not self._want_online.is_set():  # went offline while connecting
                    self._abort_socket()
                # Subscribe before announcing, so that nothing sent in answer to the announcement is missed.
                await client.subscribe(cmd_topic(self.device_id), qos=1)
                await client.publish(self._status_topic, ONLINE, qos=1, retain=True)
                await self._hello(client)
                self._online.set()
                self.stats["connects"] += 1
                self.last_error = None
                self._log(logging.INFO, "online", connects=self.stats["connects"])
                await self._serve(client)
            finally:
                self._client = None
                self._online.clear()

    async def _serve(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        messages = client.messages
        next_due = self._tick_start(loop.time())
        receive: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                if receive is None:
                    receive = asyncio.ensure_future(anext(messages))
                wait_s = next_due - loop.time()
                if wait_s > 0:
                    await asyncio.wait((receive,), timeout=wait_s)
                if receive.done():
                    message = receive.result()  # raises MqttError when the connection dropped
                    receive = None
                    await self._on_message(client, message)
                if loop.time() >= next_due:
                    next_due = await self._tick(client, loop.time())
        finally:
            if receive is not None and not receive.done():
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await receive

    # ------------------------------------------------------------------ for subclasses

    async def _hello(self, client: aiomqtt.Client) -> None:
        raise NotImplementedError

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        raise NotImplementedError

    def _tick_start(self, now: float) -> float:
        """Loop time of the first timed message of a connection."""
        raise NotImplementedError

    async def _tick(self, client: aiomqtt.Client, now: float) -> float:
        """Send what is due at loop time `now`; returns when the next one is due."""
        raise NotImplementedError

    # ------------------------------------------------------------------ up messages, with faults

    async def _publish_up(self, client: aiomqtt.Client, msg: UpMessage, times: int = 1) -> None:
        """Send an up message `times` times (more with the duplicate fault), late with the delay
        fault, or not at all with the drop fault."""
        faults = self.faults
        if faults.drop_messages:
            self.stats["dropped"] += 1
            return
        times *= faults.duplicate
        if faults.delay_s > 0:
            task = asyncio.create_task(self._send_later(client, msg, faults.delay_s, times))
            self._delayed.add(task)
            task.add_done_callback(self._delayed.discard)
            return
        await self._send(client, msg, times)

    async def _send_later(self, client: aiomqtt.Client, msg: UpMessage, delay_s: float, times: int) -> None:
        await asyncio.sleep(delay_s)
        with contextlib.suppress(aiomqtt.MqttError):
            await self._send(client, msg, times)

    async def _send(self, client: aiomqtt.Client, msg: UpMessage, times: int = 1) -> None:
        payload = msg.model_dump_json().encode()
        topic = up_topic(self.device_id, UpChannel(msg.type))
        for _ in range(times):
            await client.publish(topic, payload, qos=1)
