"""Deregistration (issue 15): a deregistered user's rentals, days and regions move to one pseudonym after
the delay; counts stay, nothing names the user any more. Bank positions go after their retention (real
PostgreSQL)."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from analytics_svc.consumers import Ingest
from analytics_svc.erasure import pseudonymise_due
from analytics_svc.retention import prune_positions
from contracts import new_event
from contracts.events import UserDeregistered
from kit.db import make_engine, make_sessionmaker, unit_of_work

TABLES = ("rental_facts", "user_days", "active_user_periods")


def ahead() -> datetime:
    """The tests' clock, two days ahead: an analytics app running beside them on this database (its erasure and
    retention jobs, on the real clock with the test stack's short delay) must not take their rows first (CI saw
    the "recent" user pseudonymised by such a job)."""
    return datetime.now(UTC) + timedelta(days=2)


async def test_a_deregistered_users_facts_move_to_a_pseudonym(prepared_database: str) -> None:
    gone, recent, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = ahead()
    engine = make_engine(prepared_database)
    sessions = make_sessionmaker(engine)
    gone_rentals: list[uuid.UUID] = []
    try:
        async with engine.begin() as conn:
            for who in (gone, recent, other):
                await conn.execute(
                    text("INSERT INTO user_facts (user_id, registered_at, birth_year) VALUES (:u, :at, 1990)"),
                    {"u": who, "at": now - timedelta(days=30)},
                )
                for n in range(2):
                    rental = uuid.uuid4()
                    if who == gone:
                        gone_rentals.append(rental)
                    await conn.execute(
                        text(
                            "INSERT INTO rental_facts (rental_id, user_id, bank_id, cabinet_id, started_at, start_cell,"
                            " return_cell) VALUES (:r, :u, 'PB-E', 'CAB-E', :at, '8831aa5', '8831aa7')"
                        ),
                        {"r": rental, "u": who, "at": now - timedelta(days=n + 1)},
                    )
                    await conn.execute(
                        text("INSERT INTO user_days (day, user_id, division) VALUES (:d, :u, '420106')"),
                        {"d": (now - timedelta(days=n + 1)).date(), "u": who},
                    )
                await conn.execute(
                    text("INSERT INTO active_user_periods VALUES ('m', :d, :u, ARRAY['', '42', '4201', '420106'])"),
                    {"d": now.date().replace(day=1), "u": who},
                )
        ingest = Ingest(ZoneInfo("Asia/Shanghai"))
        for who, at in ((gone, now - timedelta(hours=2)), (recent, now - timedelta(minutes=5))):
            event = new_event(UserDeregistered(user_id=who, at=at), key=str(who), producer="user-svc")
            async with unit_of_work(sessions) as session:
                await ingest.on_deregistered(session, event)

        assert await pseudonymise_due(sessions, now=now, delay_s=3600) >= 1
        assert await pseudonymise_due(sessions, now=now, delay_s=3600) == 0  # done once

        async with engine.connect() as conn:

            async def count(table: str, who: uuid.UUID) -> int:
                sql = f"SELECT count(*) FROM {table} WHERE user_id = :u"
                return int((await conn.execute(text(sql), {"u": who})).scalar_one())

            for table in TABLES:
                assert await count(table, gone) == 0, table
                assert await count(table, recent) > 0, table  # within the delay: not yet
                assert await count(table, other) > 0, table
            rentals = await conn.execute(
                text("SELECT DISTINCT user_id FROM rental_facts WHERE rental_id = ANY(:r)"), {"r": gone_rentals}
            )
            (pseudonym,) = [r.user_id for r in rentals]  # one rider still: distinct riders hold
            assert pseudonym != gone
            for table in TABLES[1:]:
                assert await count(table, pseudonym) > 0, table  # the same pseudonym everywhere
            fact = (
                await conn.execute(
                    text("SELECT birth_year, registered_at, pseudonymised_at FROM user_facts WHERE user_id = :u"),
                    {"u": gone},
                )
            ).one()
            assert fact.birth_year is None and fact.registered_at is not None and fact.pseudonymised_at == now
    finally:
        await engine.dispose()


async def test_bank_positions_older_than_the_retention_go(prepared_database: str, settings) -> None:
    now = ahead()
    keep = timedelta(seconds=settings.position_retention_s)
    engine = make_engine(prepared_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM bank_position_facts WHERE bank_id = 'PB-RET'"))
            for age in (keep + timedelta(days=1), keep + timedelta(minutes=1), keep - timedelta(minutes=1)):
                await conn.execute(
                    text("INSERT INTO bank_position_facts (bank_id, at, cell) VALUES ('PB-RET', :at, '8831aa5')"),
                    {"at": now - age},
                )
        assert await prune_positions(make_sessionmaker(engine), settings, now=now) >= 2
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT at FROM bank_position_facts WHERE bank_id = 'PB-RET'"))).scalars()
            assert list(left) == [now - keep + timedelta(minutes=1)]
    finally:
        await engine.dispose()
