"""Retention (issue 15): SMS codes, login failures, expired sessions and eligibility decisions do not stay
forever; the job deletes what is past its period and keeps the rest (real PostgreSQL)."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from kit.db import make_sessionmaker, unit_of_work
from user_svc.retention import prune_expired
from user_svc.settings import Settings


async def test_rows_past_their_period_go_and_the_rest_stay(settings: Settings, database_url: str) -> None:
    engine = create_async_engine(database_url)
    sessionmaker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    old_code, new_code = now - timedelta(days=31), now - timedelta(days=29)
    phone = f"+86139{uuid.uuid4().int % 10**8:08d}"
    try:
        async with unit_of_work(sessionmaker) as session:
            for at in (old_code, new_code):
                await session.execute(
                    text(
                        "INSERT INTO verification_codes (id, channel, destination, purpose, code_hash, client_ip,"
                        " created_at, expires_at) VALUES (:id, 'sms', :phone, 'login', 'h', '203.0.113.1', :at, :at)"
                    ),
                    {"id": uuid.uuid4(), "phone": phone, "at": at},
                )
                await session.execute(
                    text("INSERT INTO login_failures (key, failures, window_started_at) VALUES (:k, 1, :at)"),
                    {"k": f"{phone}:{at.isoformat()}", "at": at},
                )
            for at in (now - timedelta(days=366), now - timedelta(days=300)):
                await session.execute(
                    text(
                        "INSERT INTO eligibility_decisions (phone, accepted, reasons, rules, at)"
                        " VALUES (:phone, true, '[]', '{}', :at)"
                    ),
                    {"phone": phone, "at": at},
                )
        pruned = await prune_expired(sessionmaker, settings, now=now)
        assert pruned["verification_codes"] >= 1 and pruned["eligibility_decisions"] >= 1
        async with engine.connect() as conn:
            codes = (
                await conn.execute(
                    text("SELECT created_at FROM verification_codes WHERE destination = :p"), {"p": phone}
                )
            ).scalars()
            assert list(codes) == [new_code]
            failures = (
                await conn.execute(
                    text("SELECT window_started_at FROM login_failures WHERE key LIKE :p"), {"p": phone + "%"}
                )
            ).scalars()
            assert list(failures) == [new_code]
            decisions = (
                await conn.execute(text("SELECT at FROM eligibility_decisions WHERE phone = :p"), {"p": phone})
            ).scalars()
            assert list(decisions) == [now - timedelta(days=300)]
    finally:
        await engine.dispose()
