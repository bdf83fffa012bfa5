"""Property: batched ingest gives exactly the one-at-a-time result. The same deliveries (the events of a few
rentals, registrations with birth years, deregistrations, cabinet stock reports, bank module readings and bank
alarms, in a random order, with redeliveries under the same event id and republished copies under a new one)
are applied twice on the real database: one at a time through the kit's `EventConsumer.handle` with the
per-event handlers, and cut at random points into fetches through `EventConsumer.handle_batch` with
`Ingest.apply_batch`. Every fact table, the processed event ids and the rebuilt hourly rollup must be equal,
row for row.

It found that a reading or an alarm for a bank analytics had not seen yet was dropped, so a fetch (which
applies readings before ejects and alarms after them) kept what one-at-a-time lost, and the reverse: bank facts
are now independent registers (state, place, cycles, health), each keeping its newest value (docs/analytics.md)."""

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from analytics_svc.consumers import Ingest
from analytics_svc.rollup.service import refresh
from contracts import Envelope, new_event
from contracts.events import (
    DeviceAlarmKind,
    DeviceAlarmRaised,
    DeviceTelemetryReported,
    UserDeregistered,
    UserRegistered,
)
from kit.db import make_sessionmaker
from kit.kafka import EventConsumer

BASE = datetime(2026, 10, 5, tzinfo=UTC)
USERS = ("U1", "U2", "U3")
# Every table the ingest writes, each read in a fixed order (columns as stored, times included).
TABLES = {
    "rental_facts": "rental_id",
    "return_facts": "cabinet_id, report_id",
    "user_facts": "user_id",
    "user_days": "day, user_id, division",
    "bank_facts": "bank_id",
    "cabinet_regions": "cabinet_id",
    "rollup_dirty_hours": "hour",
    "active_user_periods": "1, 2, 3",
    "active_user_counts": "1, 2, 3",
}
TRUNCATE = f"TRUNCATE {', '.join(TABLES)}, rental_rollup_hourly, processed_events"

minute = st.integers(0, 9 * 24 * 60 - 1)  # two ISO weeks from BASE (a Monday)
rental = st.tuples(st.sampled_from("ABCD"), st.sampled_from(["A", "B", "C", "D", None]), minute, st.sampled_from(USERS))
registration = st.tuples(st.sampled_from(USERS), minute, st.none() | st.integers(1940, 2012))
stock = st.tuples(st.sampled_from("ABCD"), minute, st.integers(0, 8), st.none() | st.integers(8, 12))
module = st.tuples(st.integers(0, 5), minute, st.none() | st.integers(0, 1100), st.none() | st.integers(50, 100))
alarm = st.tuples(st.integers(0, 5), minute)  # a high temperature: the bank counts as faulty


@st.composite
def deliveries(draw):
    """(events, arrival order with copies, which copies get a new event id, the cut points into fetches)."""
    parts = (
        draw(st.lists(rental, min_size=1, max_size=5)),
        draw(st.lists(registration, max_size=3, unique_by=lambda r: r[0])),
        draw(st.sets(st.sampled_from(USERS), max_size=2)),
        draw(st.lists(stock, max_size=4)),
        draw(st.lists(module, max_size=4)),
        draw(st.lists(alarm, max_size=2)),
    )
    return parts


def events_of(parts, dataset) -> list[tuple[object, str]]:
    rentals, registrations, deregistrations, stocks, modules, alarms = parts
    out: list[tuple[object, str]] = []
    for i, (start, back, m, user) in enumerate(rentals):
        out += dataset.rental_events(
            dataset.Rental(f"B{i}", user, f"PB-B{i}", start, BASE + timedelta(minutes=m), back)
        )
    for user, m, year in registrations:
        uid = dataset.USERS[user]
        registered = UserRegistered(
            user_id=uid, registered_at=BASE + timedelta(minutes=m), terms_version="v1", birth_year=year
        )
        out.append((registered, str(uid)))
    for user in sorted(deregistrations):
        uid = dataset.USERS[user]
        out.append((UserDeregistered(user_id=uid, at=BASE + timedelta(days=20)), str(uid)))
    for cabinet, m, present, slots in stocks:
        at = BASE + timedelta(minutes=m)
        report = DeviceTelemetryReported(
            device_id=dataset.cabinet_id(cabinet),
            reported_at=at,
            received_at=at,
            banks_present=present,
            banks_rentable=max(0, present - 1),
            slot_count=slots,
            region=dataset.region(cabinet),
        )
        out.append((report, dataset.cabinet_id(cabinet)))
    for bank, m, cycles, health in modules:
        at = BASE + timedelta(minutes=m)
        report = DeviceTelemetryReported(
            device_id=f"PB-B{bank}",
            device_kind="bank",
            reported_at=at,
            received_at=at,
            charge_cycles=cycles,
            health_pct=health,
        )
        out.append((report, f"PB-B{bank}"))
    for bank, m in alarms:
        raised = DeviceAlarmRaised(
            device_id=f"PB-B{bank}",
            kind=DeviceAlarmKind.HIGH_TEMPERATURE,
            at=BASE + timedelta(minutes=m),
            device_kind="bank",
        )
        out.append((raised, f"PB-B{bank}"))
    return out


@st.composite
def scenario(draw):
    parts = draw(deliveries())
    n = sum(4 if back else 2 for _, back, _, _ in parts[0]) + len(parts[1]) + len(parts[2]) + len(parts[3])
    n += len(parts[4]) + len(parts[5])
    order = draw(st.permutations(range(n)))
    copies = draw(st.lists(st.tuples(st.integers(0, n - 1), st.booleans()), max_size=4))  # (event, new id?)
    sequence = [*((i, False) for i in order), *copies]
    positions = draw(st.permutations(range(len(sequence))))  # copies land anywhere, not only at the end
    sequence = [sequence[p] for p in positions]
    cuts = draw(st.sets(st.integers(1, len(sequence) - 1), max_size=len(sequence))) if len(sequence) > 1 else set()
    return parts, sequence, sorted(cuts)


async def snapshot(engine) -> dict[str, list[tuple[object, ...]]]:
    """Every column but surrogate ids (a sequence also advances for a row ON CONFLICT DO NOTHING skips)."""
    async with engine.connect() as conn:
        out = {}
        for table, order in TABLES.items():
            columns = (
                await conn.execute(
                    text(
                        "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position) FROM information_schema.columns "
                        "WHERE table_name = :t AND column_name <> 'id'"
                    ),
                    {"t": table},
                )
            ).scalar_one()
            query = f"SELECT {columns} FROM {table} ORDER BY {order}"
            out[table] = [tuple(row) for row in await conn.execute(text(query))]
        out["rental_rollup_hourly"] = [
            tuple(row)
            for row in await conn.execute(
                text(
                    "SELECT hour, start_division, start_cell, return_division, rentals, returned "
                    "FROM rental_rollup_hourly ORDER BY 1, 2, 3, 4"
                )
            )
        ]
        out["processed_events"] = [
            tuple(row)
            for row in await conn.execute(text("SELECT event_id, event_type FROM processed_events ORDER BY 1"))
        ]
    return out


async def run(database_url, dataset, parts, sequence, cuts) -> None:
    events = events_of(parts, dataset)
    envelopes = [new_event(data, key=key, producer="batch-property-test") for data, key in events]  # type: ignore[arg-type]
    arrivals: list[Envelope] = [
        new_event(envelopes[i].data, key=envelopes[i].key, producer="batch-property-test") if fresh else envelopes[i]
        for i, fresh in sequence
    ]
    engine = create_async_engine(database_url, poolclass=NullPool)
    sessionmaker = make_sessionmaker(engine)
    ingest = Ingest(dataset.SHANGHAI)
    handlers = ingest.handlers()
    consumer = EventConsumer(
        name="events",
        bootstrap="unused:9092",
        group_id="batch-property",
        topics=[],
        handlers=handlers,
        sessionmaker=sessionmaker,
        batch_handler=ingest.apply_batch,
    )
    try:
        results = []
        for batched in (False, True):
            async with engine.begin() as conn:
                await conn.execute(text(TRUNCATE))
            if batched:
                for start, end in zip([0, *cuts], [*cuts, len(arrivals)], strict=True):
                    await consumer.handle_batch(arrivals[start:end])
            else:
                for envelope in arrivals:
                    await consumer.handle(envelope, handlers[envelope.type])
            await refresh(sessionmaker)
            results.append(await snapshot(engine))
        one_at_a_time, in_fetches = results
        for table in one_at_a_time:
            assert in_fetches[table] == one_at_a_time[table], table
    finally:
        await engine.dispose()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario())
def test_any_split_into_fetches_gives_the_one_at_a_time_store(prepared_database, dataset, case):
    parts, sequence, cuts = case
    asyncio.run(run(prepared_database, dataset, parts, sequence, cuts))


def test_one_fetch_of_everything(prepared_database, dataset):
    """Concrete case: two rentals of one user, one returned where the other started, a registration, its
    deregistration before it, a stock report, a bank reading and a bank alarm arriving before their banks' ejects,
    all in one fetch with a redelivered end."""
    parts = (
        [("A", "B", 60, "U1"), ("B", None, 75, "U1")],
        [("U1", 10, 1990)],
        {"U1"},
        [("A", 5, 4, 10)],
        [(0, 70, 300, 90)],  # a reading of the first rental's bank, arriving before its eject
        [(1, 80)],  # an alarm for the second rental's bank, arriving before its eject
    )
    sequence = [(i, False) for i in (9, 10, 6, 5, 3, 2, 1, 0, 4, 7, 8)] + [(3, False), (3, True)]
    asyncio.run(run(prepared_database, dataset, parts, sequence, []))
