"""Property: whatever order the facts arrive in, however often, and whenever the rollup is rebuilt
in between, the analysis store ends in the same state: the one computed from the rentals alone.

The handlers run as the consumer runs them (one transaction per event) on the real database; copies
carry new event ids, so the kit's event-id dedupe cannot help and the business keys must."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from analytics_svc.active_users import GRAINS, period_start, prefixes, rebuild
from analytics_svc.consumers import Ingest
from analytics_svc.rollup.service import refresh
from contracts import new_event
from kit.db import make_sessionmaker, unit_of_work

FACT_TABLES = (
    "rental_facts, return_facts, user_facts, user_days, bank_facts, cabinet_regions, rental_rollup_hourly, "
    "rollup_dirty_hours, active_user_periods, active_user_counts"
)
BASE = datetime(2026, 10, 5, tzinfo=UTC)

rental = st.tuples(
    st.sampled_from("ABCD"),  # from
    st.sampled_from(["A", "B", "C", "D", None]),  # back at (None: still out)
    st.integers(0, 9 * 24 * 60 - 1),  # start, minutes after BASE (a Monday): two ISO weeks
    st.sampled_from(["U1", "U2", "U3"]),
)


@st.composite
def deliveries(draw, rentals_strategy=st.lists(rental, min_size=1, max_size=6)):
    specs = draw(rentals_strategy)
    n_events = sum(4 if back else 2 for _, back, _, _ in specs)
    order = draw(st.permutations(range(n_events)))
    copies = draw(st.lists(st.integers(0, n_events - 1), max_size=4))
    refresh_after = draw(st.sets(st.integers(0, n_events + len(copies) - 1), max_size=3))
    return specs, [*order, *copies], refresh_after


def build(specs, dataset):
    rentals = []
    for i, (start, back, minute, user) in enumerate(specs):
        r = dataset.Rental(f"P{i}", user, f"PB-P{i}", start, BASE + timedelta(minutes=minute), back)
        rentals.append(r)
    events = [e for r in rentals for e in dataset.rental_events(r)]
    return rentals, events


def expected_active_users(rentals, dataset):
    """(grain, period, region prefix) -> (distinct users, those whose first rental is in that period)."""
    first = {}
    for r in rentals:
        first[r.user] = min(first.get(r.user, r.started_at), r.started_at)
    users = {}
    for r in rentals:
        day = r.started_at.astimezone(dataset.SHANGHAI).date()
        for grain in GRAINS:
            for prefix in prefixes(dataset.region(r.start).division_code):
                users.setdefault((grain, period_start(grain, day), prefix), set()).add(r.user)
    return {
        (grain, start, prefix): (
            len(found),
            sum(period_start(grain, first[u].astimezone(dataset.SHANGHAI).date()) == start for u in found),
        )
        for (grain, start, prefix), found in users.items()
    }


def expected_rollup(rentals, dataset):
    rows = Counter()
    for r in rentals:
        start, back = dataset.region(r.start), dataset.region(r.back) if r.back else None
        hour = r.started_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        key = (hour, start.division_code, start.cell, back.division_code if back else "")
        rentals_n, returned_n = rows.get(key, (0, 0))
        rows[key] = (rentals_n + 1, returned_n + (1 if back else 0))
    return dict(rows)


async def scenario(database_url, dataset, specs, sequence, refresh_after):
    rentals, events = build(specs, dataset)
    engine = create_async_engine(database_url, poolclass=NullPool)
    sessionmaker = make_sessionmaker(engine)
    handlers = Ingest(dataset.SHANGHAI).handlers()
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {FACT_TABLES}"))
        for step, index in enumerate(sequence):
            data, key = events[index]
            async with unit_of_work(sessionmaker) as session:
                await handlers[data.type](session, new_event(data, key=key, producer="property-test"))
            if step in refresh_after:
                await refresh(sessionmaker)
        await refresh(sessionmaker)
        async with engine.connect() as conn:
            rollup = {
                (row.hour, row.start_division, row.start_cell, row.return_division): (row.rentals, row.returned)
                for row in await conn.execute(text("SELECT * FROM rental_rollup_hourly"))
            }
            days = set((await conn.execute(text("SELECT day, user_id, division FROM user_days"))).all())
            banks = dict((await conn.execute(text("SELECT bank_id, state FROM bank_facts"))).all())
            firsts = dict((await conn.execute(text("SELECT user_id, first_rental_at FROM user_facts"))).all())
            counts = {
                (g, p, r): (a, n)
                for g, p, r, a, n in await conn.execute(
                    text("SELECT grain, period, region, active, new FROM active_user_counts")
                )
            }
        async with unit_of_work(sessionmaker) as session:  # the bulk rebuild (the bench's) agrees
            await rebuild(session, dataset.SHANGHAI)
        async with engine.connect() as conn:
            rebuilt = set(await conn.execute(text("SELECT grain, period, region, active, new FROM active_user_counts")))
    finally:
        await engine.dispose()

    assert rollup == expected_rollup(rentals, dataset)
    assert days == {
        (r.started_at.astimezone(dataset.SHANGHAI).date(), dataset.USERS[r.user], dataset.region(r.start).division_code)
        for r in rentals
    }
    assert banks == {r.bank: ("in_cabinet" if r.back else "rented") for r in rentals}
    first = {}
    for r in rentals:
        uid = dataset.USERS[r.user]
        first[uid] = min(first.get(uid, r.started_at), r.started_at)
    assert firsts == first
    # The exact active-user counters kept at ingest: distinct users per day, week and month and region prefix.
    assert counts == expected_active_users(rentals, dataset)
    assert rebuilt == {(*key, *value) for key, value in counts.items()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries())
def test_any_order_and_any_copies_give_the_same_store(prepared_database, dataset, delivery):
    specs, sequence, refresh_after = delivery
    asyncio.run(scenario(prepared_database, dataset, specs, sequence, refresh_after))


def test_a_late_rental_lands_in_its_own_hour(prepared_database, dataset):
    """Concrete case: the hour is rolled up, then another rental from that hour arrives late (its
    events come after the rebuild) and its return comes before its start."""
    rentals = (("A", "B", 60, "U1"), ("C", "A", 75, "U2"))
    asyncio.run(scenario(prepared_database, dataset, rentals, [0, 1, 2, 3, 6, 7, 4, 5], {3}))
