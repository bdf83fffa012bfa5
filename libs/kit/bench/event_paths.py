"""What the kit's per-event and per-outbox-row paths cost in CPU (issue 9): a unit of work, the idempotent
consumer's transaction (one event, and one fetch of several), and the outbox relay (a pass that finds
nothing, a pass that publishes one row). Against the test stack's PostgreSQL and broker, on a scratch database
of its own.

    python3 deploy/local/stack.py exec --stack test -- .venv/bin/python libs/kit/bench/event_paths.py

Prints JSON: per operation, this process's CPU (`time.process_time`) and the PostgreSQL backends' CPU (from
/proc, the backends of the scratch database), in ms per operation, with the load average. On a shared machine
only figures taken back to back in the same run compare."""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts import Envelope, new_event
from contracts.events import UserBlocked
from kit.db import make_sessionmaker, unit_of_work
from kit.kafka import EventConsumer, make_producer, one_transaction_per_fetch
from kit.outbox import OutboxRelay, OutboxWakeup, add_event
from kit.testing import kafka_bootstrap, kit_database

_TICKS = os.sysconf("SC_CLK_TCK")


async def _backend_pids(engine: AsyncEngine, database: str) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database})
        return [row[0] for row in rows]


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _blocked() -> UserBlocked:
    return UserBlocked(user_id=uuid4(), reason="bench", at=datetime.now(UTC))


async def _noop(_session: AsyncSession, _envelope: Envelope) -> None:
    return None


async def main(repetitions: int) -> dict[str, object]:
    database = "pb_bench_kit_event_paths"
    async with kit_database(database) as engine:
        sessions = make_sessionmaker(engine)
        consumer = EventConsumer(
            name="bench",
            bootstrap=kafka_bootstrap(),
            group_id="bench",
            topics=[],
            handlers={"user.user.blocked": _noop},
            sessionmaker=sessions,
        )
        batched = EventConsumer(
            name="bench-batch",
            bootstrap=kafka_bootstrap(),
            group_id="bench-batch",
            topics=[],
            handlers={"user.user.blocked": _noop},
            sessionmaker=sessions,
            batch_handler=one_transaction_per_fetch({"user.user.blocked": _noop}),
        )
        producer = make_producer(kafka_bootstrap(), "bench-event-paths")
        await producer.start()
        relay = OutboxRelay(sessions, producer, OutboxWakeup())

        def envelope() -> Envelope:
            return new_event(_blocked(), key="bench", producer="bench")

        async def uow_select() -> None:
            async with unit_of_work(sessions) as session:
                await session.execute(text("SELECT 1"))

        async def handle_one() -> None:
            await consumer.handle(envelope(), _noop)

        async def handle_duplicate() -> None:
            await consumer.handle(dup, _noop)

        async def batch_of_5() -> None:
            await batched.handle_batch([envelope() for _ in range(5)])

        async def write_one_row() -> None:
            async with unit_of_work(sessions) as session:
                await add_event(session, _blocked(), key="bench", producer="bench")

        async def relay_empty() -> None:
            await relay.publish_pending()

        async def write_and_relay_one() -> None:
            await write_one_row()
            assert await relay.publish_pending() == 1

        dup = envelope()
        await consumer.handle(dup, _noop)
        await relay.publish_pending()  # nothing left from earlier
        cases: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
            ("unit_of_work + SELECT 1", uow_select, 1),
            ("consumer: one event (no-op handler)", handle_one, 1),
            ("consumer: a duplicate", handle_duplicate, 1),
            ("consumer: a fetch of 5 in one transaction, per event", batch_of_5, 5),
            ("relay: a pass that finds nothing", relay_empty, 1),
            ("relay: write one row and publish it", write_and_relay_one, 1),
            ("outbox: write one row (unit_of_work + add_event)", write_one_row, 1),  # last: leaves rows
        ]
        results: dict[str, object] = {}
        try:
            for name, op, events in cases:
                for _ in range(max(20, repetitions // 10)):  # warm: pool, prepared statements, caches
                    await op()
                pids = await _backend_pids(engine, database)
                pg, cpu = _cpu_s(pids), time.process_time()
                for _ in range(repetitions):
                    await op()
                cpu, pg = time.process_time() - cpu, _cpu_s(pids) - pg
                per = repetitions * events
                results[name] = {"service_ms": round(cpu / per * 1e3, 3), "postgres_ms": round(pg / per * 1e3, 3)}
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM outbox WHERE published_at IS NULL"))  # the write-only case's rows
        finally:
            await producer.stop()
    return {"repetitions": repetitions, "results": results, "load_average": os.getloadavg()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.repetitions)), indent=2))
