"""Deregistration (issue 15): billing forgets the words of a user's disputes and why they were blocked; the
rental, the dispute's outcome and the money stay, by user id (real PostgreSQL)."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from billing_svc.users import on_user_deregistered
from contracts import new_event
from contracts.events import UserDeregistered
from kit.db import make_engine, make_sessionmaker, unit_of_work

RENTAL = (
    "INSERT INTO rentals (id, user_id, code, state, command_id, requested_at, eject_deadline, period_minutes,"
    " price_per_period_fen, free_minutes, daily_cap_fen, fee_fen) VALUES (:id, :u, 'PB-1', 'settled', :cmd, now(),"
    " now(), 30, 150, 0, 2000, 150)"
)
DISPUTE = (
    "INSERT INTO disputes (id, rental_id, user_id, reason, state, resolution, created_at)"
    " VALUES (:id, :r, :u, :why, 'resolved', 'refunded', now())"
)


async def test_a_deregistered_users_words_go_and_the_money_stays(database_url: str) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            for who in (user, other):
                rental = uuid.uuid4()
                await conn.execute(text(RENTAL), {"id": rental, "u": who, "cmd": uuid.uuid4()})
                why = "call me on +8613900001111, I returned it at home"
                await conn.execute(text(DISPUTE), {"id": uuid.uuid4(), "r": rental, "u": who, "why": why})
                await conn.execute(
                    text("INSERT INTO user_access VALUES (:u, 'blocked', 'fraud by +8613900001111', now())"), {"u": who}
                )
        event = new_event(UserDeregistered(user_id=user, at=datetime.now(UTC)), key=str(user), producer="user-svc")
        async with unit_of_work(make_sessionmaker(engine)) as session:
            await on_user_deregistered(session, event)

        async with engine.connect() as conn:
            for who, kept in ((user, False), (other, True)):
                reason, resolution = (
                    await conn.execute(text("SELECT reason, resolution FROM disputes WHERE user_id = :u"), {"u": who})
                ).one()
                assert ("+8613900001111" in reason) is kept and resolution == "refunded"
                access = (
                    await conn.execute(text("SELECT status, reason FROM user_access WHERE user_id = :u"), {"u": who})
                ).one()
                assert tuple(access) == (("blocked", "fraud by +8613900001111") if kept else ("deregistered", None))
                fee = (await conn.execute(text("SELECT fee_fen FROM rentals WHERE user_id = :u"), {"u": who})).scalar()
                assert fee == 150
    finally:
        await engine.dispose()
