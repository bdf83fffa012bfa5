"""The ingest benchmark (issue 11: analytics keeps up with at least 5,000 events/s).

Publishes a seeded stream of the facts analytics consumes (per rental: bank ejected, rental started, bank
returned, rental ended; a registration per new user, a cabinet stock report every fifth rental) to the
real broker, then starts the service's own consumer (the kit's EventConsumer with analytics' handlers, on
a freshly migrated scratch database) and times how long it takes to apply the backlog. Reports events/s,
the time to apply each unit (one event, or one batch) at p50/p95/p99, and checks the store against the
stream: every rental fact, user day and return is there, and the dirty hours cover every rental's hour.

    make bench-analytics-ingest                      # on the test stack's broker; BENCH_ARGS="--rentals 20000"
    .venv/bin/python services/analytics-svc/bench/ingest.py --url <scratch database> --bootstrap <kafka>

The database named in --url is dropped and created again. Writes reports/analytics-ingest.json and prints it.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from analytics_svc.consumers import Ingest
from analytics_svc.main import TOPICS
from analytics_svc.settings import Settings
from contracts import Envelope, new_event
from contracts.events import (
    BankEjected,
    BankReturned,
    DeviceTelemetryReported,
    EventData,
    PriceSnapshot,
    RentalEnded,
    RentalStarted,
    UserRegistered,
)
from contracts.regions import region_at
from kit.app import tune_gc
from kit.db import make_engine, make_sessionmaker
from kit.kafka import EventConsumer
from kit.testing import ensure_database, migrate, move_group_to_end

SERVICE_DIR = Path(__file__).resolve().parents[1]
REPO = SERVICE_DIR.parents[1]
PRICE = PriceSnapshot(period_minutes=60, price_per_period_fen=300, free_minutes=5, daily_cap_fen=3000)
START = datetime(2026, 11, 1, tzinfo=UTC)


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}


def stream(rentals: int, cabinets: int, seed: int) -> list[tuple[EventData, str]]:
    """The events of `rentals` rentals over `cabinets` cabinets around Shenzhen, in the order produced."""
    rng = random.Random(seed)
    places = [
        (f"CAB-{i:05d}", region_at(22.45 + rng.random() * 0.2, 113.9 + rng.random() * 0.3)) for i in range(cabinets)
    ]
    users: list[uuid.UUID] = []
    out: list[tuple[EventData, str]] = []
    for n in range(rentals):
        if not users or rng.random() < 0.5:
            user = uuid.UUID(int=rng.getrandbits(128))
            users.append(user)
            registered = START + timedelta(seconds=n)
            out.append((UserRegistered(user_id=user, registered_at=registered, terms_version="1"), str(user)))
        else:
            user = rng.choice(users)
        rental_id = uuid.UUID(int=rng.getrandbits(128))
        bank = f"PB-{rng.randrange(rentals // 2 + 1):06d}"
        (start_cab, start_region), (back_cab, back_region) = rng.choice(places), rng.choice(places)
        started = START + timedelta(seconds=n * 7 + rng.randrange(60))
        ended = started + timedelta(minutes=5 + rng.randrange(180))
        out += [
            (
                BankEjected(
                    command_id=uuid.UUID(int=rng.getrandbits(128)),
                    rental_id=rental_id,
                    bank_id=bank,
                    cabinet_id=start_cab,
                    slot=1 + n % 8,
                    battery_pct=90,
                    ejected_at=started,
                    region=start_region,
                ),
                start_cab,
            ),
            (
                RentalStarted(
                    rental_id=rental_id,
                    user_id=user,
                    bank_id=bank,
                    cabinet_id=start_cab,
                    slot=1 + n % 8,
                    started_at=started,
                    price=PRICE,
                ),
                str(rental_id),
            ),
            (
                BankReturned(
                    report_id=f"ret-{rental_id}",
                    bank_id=bank,
                    cabinet_id=back_cab,
                    slot=2,
                    battery_pct=60,
                    returned_at=ended,
                    device_reported_at=ended,
                    received_at=ended,
                    region=back_region,
                ),
                bank,
            ),
            (
                RentalEnded(
                    rental_id=rental_id,
                    user_id=user,
                    bank_id=bank,
                    start_cabinet_id=start_cab,
                    return_cabinet_id=back_cab,
                    started_at=started,
                    ended_at=ended,
                    duration_seconds=int((ended - started).total_seconds()),
                    fee_fen=300,
                ),
                str(rental_id),
            ),
        ]
        if n % 5 == 0:
            out.append(
                (
                    DeviceTelemetryReported(
                        device_id=back_cab,
                        reported_at=ended,
                        received_at=ended,
                        banks_present=rng.randrange(12),
                        banks_rentable=rng.randrange(8),
                        slot_count=12,
                        region=back_region,
                    ),
                    back_cab,
                )
            )
    return out


async def publish(bootstrap: str, envelopes: list[Envelope]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5, max_batch_size=262_144
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for envelope in envelopes:
            pending.append(await producer.send(envelope.topic.value, envelope.to_bytes(), key=envelope.key.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


class _Stages:
    """Times the consumer's stages for the report, and says when the last event of the backlog has committed.
    Wraps the kit consumer's own steps (no copy of its loop): `getmany` (waiting for a fetch and decoding its
    records), `_parse` (the envelopes), `handle_batch` (the event-id dedupe, the appliers, the commit)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.committed = 0
        self.all_committed = asyncio.Event()
        self.seconds = {"fetch": 0.0, "parse": 0.0, "dedupe": 0.0, "apply": 0.0, "commit": 0.0}
        self.unit_ms: list[float] = []  # one sample per batch (or per event in single mode)
        self._apply_span: tuple[float, float] | None = None

    def _add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def _count(self, n: int) -> None:
        self.committed += n
        if self.committed >= self.total:
            self.all_committed.set()

    def applier(self, call: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def run(*args: Any) -> None:
            started = time.perf_counter()
            await call(*args)
            self._apply_span = (started, time.perf_counter())
            self.unit_ms.append((self._apply_span[1] - started) * 1000)

        return run

    def attach(self, consumer: EventConsumer, mode: str) -> None:
        parse, handle_batch, handle = consumer._parse, consumer.handle_batch, consumer.handle

        def timed_parse(record: Any) -> Any:
            started = time.perf_counter()
            try:
                return parse(record)
            finally:
                self._add("parse", started)

        async def timed_handle_batch(envelopes: Any) -> set[uuid.UUID]:
            started = time.perf_counter()
            self._apply_span = None
            fresh = await handle_batch(envelopes)
            ended = time.perf_counter()
            if self._apply_span is None:  # nothing new in this fetch
                self.seconds["dedupe"] += ended - started
            else:
                applied_from, applied_to = self._apply_span
                self.seconds["dedupe"] += applied_from - started
                self.seconds["apply"] += applied_to - applied_from
                self.seconds["commit"] += ended - applied_to
            self._count(len(fresh))
            return fresh

        async def counted_handle(envelope: Any, handler: Any) -> str:
            outcome = await handle(envelope, handler)
            if outcome == "done":
                self._count(1)
            return outcome

        consumer._parse = timed_parse  # type: ignore[method-assign]
        if mode == "single":
            consumer.handle = counted_handle  # type: ignore[method-assign]
        else:
            consumer.handle_batch = timed_handle_batch  # type: ignore[method-assign]
        getmany = AIOKafkaConsumer.getmany
        stages = self

        async def timed_getmany(self: AIOKafkaConsumer, *partitions: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await getmany(self, *partitions, **kwargs)
            finally:
                stages._add("fetch", started)

        AIOKafkaConsumer.getmany = timed_getmany

    def report(self, elapsed: float) -> dict[str, float]:
        """Seconds per stage since the backlog started to be applied (single mode: fetch and parse only)."""
        timed = {stage: round(seconds, 2) for stage, seconds in self.seconds.items()}
        return timed | {"other": round(elapsed - sum(self.seconds.values()), 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a scratch database (dropped and created)")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19093"))
    parser.add_argument("--rentals", type=int, default=10_000)
    parser.add_argument("--cabinets", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--mode", choices=["batch", "single"], default="batch", help="single: one event per transaction"
    )
    parser.add_argument(
        "--max-records",
        type=int,
        default=Settings.model_fields["ingest_batch_max"].default,
        help="records per fetch (one batch); default: the service's INGEST_BATCH_MAX",
    )
    parser.add_argument(
        "--gc-gen0-threshold",
        type=int,
        default=Settings.model_fields["gc_gen0_threshold"].default,
        help="the garbage collector's youngest-generation threshold; default: the service's; 0: Python's own",
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--report", default=str(REPO / "reports" / "analytics-ingest.json"))
    args = parser.parse_args()

    await ensure_database(args.url, recreate=True)
    migrate(SERVICE_DIR, args.url)
    events = stream(args.rentals, args.cabinets, args.seed)
    envelopes = [new_event(data, key=key, producer="analytics-ingest-bench") for data, key in events]
    group = f"analytics-ingest-bench-{uuid.uuid4().hex[:8]}"
    topics = [t.value for t in TOPICS]
    await move_group_to_end(args.bootstrap, group, topics)
    publish_s = await publish(args.bootstrap, envelopes)
    total = len(envelopes)
    print(f"published {total:,} events in {publish_s:.1f} s", flush=True)
    # The consumer's process holds what the service's would: not the published stream (millions of objects
    # that every full collection of the garbage collector would walk, making a bigger backlog slower per event),
    # and its garbage collector is tuned as the service's is (kit.app.tune_gc, GC_GEN0_THRESHOLD).
    del events, envelopes
    gc.collect()
    tune_gc(args.gc_gen0_threshold)

    engine = make_engine(args.url, 4)
    sessionmaker = make_sessionmaker(engine)
    ingest = Ingest(ZoneInfo("Asia/Shanghai"))
    stages = _Stages(total)
    options: dict[str, Any] = {}
    if args.mode == "single":
        handlers = {event_type: stages.applier(h) for event_type, h in ingest.handlers().items()}
    else:
        handlers = ingest.handlers()
        options = {"batch_handler": stages.applier(ingest.apply_batch), "max_records": args.max_records}
    consumer = EventConsumer(
        name="bench",
        bootstrap=args.bootstrap,
        group_id=group,
        topics=topics,
        handlers=handlers,
        sessionmaker=sessionmaker,
        **options,
    )
    stages.attach(consumer, args.mode)
    task = asyncio.create_task(consumer.run())
    try:
        while not consumer.ready:  # noqa: ASYNC110 (the kit's consumer has no event to wait on)
            await asyncio.sleep(0.05)
        load_before = os.getloadavg()
        pg_before = await _postgres_cpu(sessionmaker)
        cpu_before = time.process_time()
        started = time.perf_counter()
        stages.seconds = dict.fromkeys(stages.seconds, 0.0)
        # The consumer itself says when the last event committed (no polling of the database beside it: a
        # poll for every id of the backlog cost more than the consumer's own work at 20,000 rentals).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stages.all_committed.wait(), timeout=args.timeout)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_before
        pg_after = await _postgres_cpu(sessionmaker)
        load_after = os.getloadavg()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async with sessionmaker() as session:
        done = await _count(session, "SELECT count(*) FROM processed_events WHERE consumer = :group", {"group": group})
        rows = {
            table: await _count(session, f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("rental_facts", "return_facts", "user_days", "user_facts", "cabinet_regions", "bank_facts")
        }
        missing_region = await _count(
            session, "SELECT count(*) FROM rental_facts WHERE start_division IS NULL OR return_division IS NULL"
        )
        undirty = await _count(
            session,
            "SELECT count(*) FROM rental_facts r WHERE NOT EXISTS "
            "(SELECT 1 FROM rollup_dirty_hours d WHERE d.hour = date_trunc('hour', r.started_at))",
        )
    await engine.dispose()

    unit = "event" if args.mode == "single" else "batch"
    report = {
        "benchmark": "analytics-svc ingest (issue 11)",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        # The machine is shared: the 1/5/15-minute load averages when the consumer started and when it finished.
        "load_average": {"start": [round(x, 1) for x in load_before], "end": [round(x, 1) for x in load_after]},
        "mode": args.mode,
        "max_records": args.max_records,
        "gc_gen0_threshold": args.gc_gen0_threshold,
        "rentals": args.rentals,
        "events": total,
        "applied": done,
        "complete": done >= total,
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(done / elapsed),
        f"ms_per_{unit}": _percentiles(stages.unit_ms),
        # Where the consumer's time went, seconds of the elapsed time: parsing the envelopes, the event-id
        # dedupe, the appliers, the commit; `other` is the rest (waiting for fetches, decoding records, offsets).
        "stages_s": stages.report(elapsed),
        # CPU seconds spent, which the machine's other load moves far less than the elapsed time: this process
        # (the consumer: fetch decoding, parsing, the appliers' Python) and the bench database's PostgreSQL
        # backends (None where they are not local processes this one can read).
        "cpu_s": {
            "consumer": round(cpu_s, 2),
            "postgres": _cpu_delta(pg_before, pg_after),
        },
        "store": rows | {"facts_missing_a_region": missing_region, "facts_without_dirty_hour": undirty},
    }
    _write(Path(args.report), json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


async def _postgres_cpu(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[int, float] | None:
    """CPU seconds used so far by each PostgreSQL backend connected to the bench's database (/proc, Linux)."""
    async with sessionmaker() as session:
        pids = (
            await session.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        ).scalars()
        found = {pid: _process_cpu(pid) for pid in pids}
    if any(cpu is None for cpu in found.values()):
        return None  # not processes of this machine (or not ours to read)
    return {pid: cpu for pid, cpu in found.items() if cpu is not None}


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc/<pid>/stat, fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    return round(sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), 2)


def _write(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


async def _count(session: AsyncSession, sql: str, params: dict[str, Any] | None = None) -> int:
    return int((await session.execute(text(sql), params or {})).scalar_one())


if __name__ == "__main__":
    asyncio.run(main())
