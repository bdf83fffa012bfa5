"""What the benchmark watches besides the product: the floors measured in the same run (raw MQTT round
trip, raw Kafka round trip, raw subscriber rate), the telemetry feed on Kafka, and CPU / memory of the
platform's processes over time, read from /proc (device_emulator.bench.cpu)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from device_emulator.bench import cpu
from device_emulator.bench.report import summarize
from kit.mqtt_client import LiteClient

FLOOR_TOPIC = "pb/v1/devices/BENCH-FLOOR/cmd"  # under the service account's ACL; not an up topic
KAFKA_FLOOR_TOPIC = "bench.floor.v1"

# ------------------------------------------------------------------ floors


async def mqtt_round_trip(
    host: str, port: int, user: str, password: str, samples: int = 200, tls: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """QoS 1 publish from A, B echoes, A receives: the same path as a command and its answer."""
    tag = uuid.uuid4().hex[:6]
    ping, pong = f"{FLOOR_TOPIC}/{tag}/ping", f"{FLOOR_TOPIC}/{tag}/pong"
    got: asyncio.Queue[float] = asyncio.Queue()
    a = LiteClient(f"bench-floor-a-{tag}", lambda t, p: got.put_nowait(time.perf_counter()))
    b_holder: list[LiteClient] = []

    def echo(_topic: str, payload: bytes) -> None:
        b_holder[0].publish_nowait(pong, payload)

    b = LiteClient(f"bench-floor-b-{tag}", echo)
    b_holder.append(b)
    await a.connect(host, port, username=user, password=password, tls=tls)
    await b.connect(host, port, username=user, password=password, tls=tls)
    try:
        await a.subscribe(pong)
        await b.subscribe(ping)
        lat: list[float] = []
        for i in range(samples):
            start = time.perf_counter()
            a.publish_nowait(ping, b"%d" % i)
            end = await asyncio.wait_for(got.get(), 5)
            lat.append((end - start) * 1000)
        return summarize(lat)
    finally:
        a.disconnect()
        b.disconnect()


async def mqtt_subscriber_rate(
    host: str,
    port: int,
    user: str,
    password: str,
    count: int = 20_000,
    window: int = 500,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """One subscriber (this benchmark's MQTT client), one publisher pushing `count` QoS 1 messages with at most
    `window` sent but not yet received (so the broker never queues past its per-client limit and drops):
    messages per second received."""
    tag = uuid.uuid4().hex[:6]
    topic = f"{FLOOR_TOPIC}/{tag}/rate"
    received = 0
    room = asyncio.Event()
    done = asyncio.get_running_loop().create_future()
    sent = 0

    def on_msg(_t: str, _p: bytes) -> None:
        nonlocal received
        received += 1
        if sent - received < window // 2:
            room.set()
        if received >= count and not done.done():
            done.set_result(None)

    sub = LiteClient(f"bench-floor-sub-{tag}", on_msg)
    pub = LiteClient(f"bench-floor-pub-{tag}")
    await sub.connect(host, port, username=user, password=password, tls=tls)
    await pub.connect(host, port, username=user, password=password, tls=tls)
    try:
        await sub.subscribe(topic, qos=1)
        payload = b'{"type":"heartbeat","v":1,"msg_id":"x","ts":1764070000000,"rssi_dbm":-70}'
        start = time.perf_counter()
        while sent < count:
            if sent - received >= window:
                room.clear()
                await asyncio.wait_for(room.wait(), 10)
            pub.publish_nowait(topic, payload)
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0)  # let the sockets be read
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 10)
        elapsed = time.perf_counter() - start
        return {
            "messages": received,
            "sent": sent,
            "seconds": round(elapsed, 3),
            "msgs_per_s": round(received / elapsed),
        }
    finally:
        sub.disconnect()
        pub.disconnect()


async def aiomqtt_subscriber_rate(
    host: str,
    port: int,
    user: str,
    password: str,
    count: int = 20_000,
    window: int = 500,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """As `mqtt_subscriber_rate`, but the subscriber is an aiomqtt client, as device-svc's gateway is."""
    tag = uuid.uuid4().hex[:6]
    topic = f"{FLOOR_TOPIC}/{tag}/rate"
    pub = LiteClient(f"bench-floor-pub-{tag}")
    await pub.connect(host, port, username=user, password=password, tls=tls)
    received = sent = 0
    room = asyncio.Event()
    try:
        async with aiomqtt.Client(
            host,
            port,
            username=user,
            password=password,
            identifier=f"bench-floor-aio-{tag}",
            max_queued_incoming_messages=0,
            tls_context=tls,
        ) as sub:
            await sub.subscribe(topic, qos=1)

            async def consume() -> None:
                nonlocal received
                async for _ in sub.messages:
                    received += 1
                    if sent - received < window // 2:
                        room.set()
                    if received >= count:
                        return

            reader = asyncio.create_task(consume())
            payload = b'{"type":"heartbeat","v":1,"msg_id":"x","ts":1764070000000,"rssi_dbm":-70}'
            start = time.perf_counter()
            while sent < count:
                if sent - received >= window:
                    room.clear()
                    await asyncio.wait_for(room.wait(), 10)
                pub.publish_nowait(topic, payload)
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 10)
            elapsed = time.perf_counter() - start
            reader.cancel()
        return {
            "messages": received,
            "sent": sent,
            "seconds": round(elapsed, 3),
            "msgs_per_s": round(received / elapsed),
        }
    finally:
        pub.disconnect()


async def kafka_round_trip(bootstrap: str, samples: int = 50, fetch_max_wait_ms: int = 5) -> dict[str, Any]:
    """Produce one message, consume it (own group-less consumer): the broker's produce-to-consume floor.
    `fetch_max_wait_ms=500` is aiokafka's default (kit's EventConsumer uses the KAFKA_FETCH_MAX_WAIT_MS setting, 50)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(Exception):  # exists already
            await admin.create_topics([NewTopic(KAFKA_FLOOR_TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=0)
    consumer = AIOKafkaConsumer(
        KAFKA_FLOOR_TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await producer.start()
    await consumer.start()
    try:
        # wait for the assignment and position, so the first sample is not a join
        deadline = time.monotonic() + 15
        while not consumer.assignment() and time.monotonic() < deadline:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)
        lat: list[float] = []
        for i in range(samples):
            marker = f"{uuid.uuid4().hex}-{i}".encode()
            start = time.perf_counter()
            await producer.send_and_wait(KAFKA_FLOOR_TOPIC, marker)
            found = False
            while not found:
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    break
                found = any(m.value == marker for msgs in batch.values() for m in msgs)
            if found:
                lat.append((time.perf_counter() - start) * 1000)
        return summarize(lat)
    finally:
        await consumer.stop()
        await producer.stop()


# ------------------------------------------------------------------ telemetry feed


def _iso_ms(value: str) -> int:
    return round(datetime.fromisoformat(value).timestamp() * 1000)


@dataclass
class TelemetryWatch:
    """Consumes device.telemetry.v1 and matches each event to a heartbeat the swarm sent, by
    (device id, device ts); lag = seen on Kafka minus published over MQTT, both on this process's clock."""

    bootstrap: str
    topic: str = "device.telemetry.v1"
    pending: dict[tuple[str, int], float] = field(default_factory=dict)
    lags_ms: list[float] = field(default_factory=list)
    seen_times: list[float] = field(default_factory=list)
    sent: int = 0
    seen: int = 0
    foreign: int = 0
    _consumer: Any = None
    _task: asyncio.Task[None] | None = None

    def record_sent(self, device_id: str, ts: int, at: float) -> None:
        self.sent += 1
        self.pending[(device_id, ts)] = at

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            # short: tansu answers a fetch when the wait is over even if records came earlier (the floor
            # kafka_round_trip_default_fetch_wait_ms shows it), so the wait adds to the measured lag; the
            # empty fetches it costs the broker are kept out of the idle window by `pause`
            fetch_max_wait_ms=20,
            max_poll_records=5000,
        )
        await self._consumer.start()
        deadline = time.monotonic() + 15
        while not self._consumer.assignment() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for tp in self._consumer.assignment():
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for msgs in batch.values():
                for m in msgs:
                    self._on_event(m.value, now)

    def _on_event(self, raw: bytes, now: float) -> None:
        try:
            data = json.loads(raw)["data"]
            key = (data["device_id"], _iso_ms(data["reported_at"]))
        except (ValueError, KeyError, TypeError):
            self.foreign += 1
            return
        sent_at = self.pending.pop(key, None)
        if sent_at is None:
            self.foreign += 1  # hello/inventory telemetry, or another device
            return
        self.seen += 1
        self.lags_ms.append((now - sent_at) * 1000)
        self.seen_times.append(now)

    def pause(self) -> None:
        """Stop fetching (the idle window: no telemetry is sent, and empty fetches cost the broker CPU)."""
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.assignment())

    def seen_between(self, start: float, end: float) -> int:
        """Heartbeats seen on Kafka between two monotonic times (`seen_times` grows in time order)."""
        return bisect.bisect_right(self.seen_times, end) - bisect.bisect_left(self.seen_times, start)

    async def drain(self, timeout_s: float, max_s: float = 60.0) -> None:
        """Wait until every sent heartbeat was seen, `timeout_s` passed without progress, or `max_s` in all."""
        last, quiet_since = self.seen, time.monotonic()
        give_up = quiet_since + max_s
        while self.pending and time.monotonic() - quiet_since < timeout_s and time.monotonic() < give_up:
            await asyncio.sleep(0.25)
            if self.seen != last:
                last, quiet_since = self.seen, time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


# ------------------------------------------------------------------ processes

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    return total


@dataclass
class ProcessSampler:
    """Every `interval_s`: CPU % (of one core) and RSS of each platform group (device_emulator.bench.cpu says
    what belongs to it) and of this benchmark ("bench", shown in the charts, never in the platform's cost)."""

    platform: cpu.Platform
    interval_s: float = 1.0
    series: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # name -> (t, cpu %, MiB)
    _task: asyncio.Task[None] | None = None
    t0: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        own = os.getpid()
        prev: dict[str, float] = {}
        prev_t = time.monotonic()
        while True:
            now = time.monotonic()
            stats = cpu.all_stats()
            totals = cpu.platform_cpu_s(self.platform, stats)
            if own in stats:
                totals["bench"] = stats[own].own_s
            dt = now - prev_t
            for name, total in totals.items():
                pct = (total - prev[name]) / dt * 100 if name in prev and dt > 0 else 0.0
                pids = cpu.tree_pids(self.platform.roots.get(name, [own]), stats)
                rss_mib = round(_rss_bytes(pids) / 2**20, 1)
                self.series.setdefault(name, []).append((now - self.t0, round(pct, 1), rss_mib))
            prev, prev_t = totals, now
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self, since: float = 0.0) -> dict[str, dict[str, float]]:
        out = {}
        for name, pts in self.series.items():
            window = [p for p in pts[1:] if p[0] >= since] or pts[1:]
            if not window:
                continue
            cpus = [p[1] for p in window]
            out[name] = {
                "cpu_avg_pct": round(sum(cpus) / len(cpus), 1),
                "cpu_max_pct": max(cpus),
                "rss_max_mib": max(p[2] for p in window),
            }
        return out


def clean_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
