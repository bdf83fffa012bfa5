"""Deregistration (issue 15): device-svc forgets where the user was (their banks' positions from their
rentals), their position consent and light requests, and its ejects stop naming them (real PostgreSQL)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from contracts import new_event
from contracts.events import UserDeregistered
from device_svc.erasure.service import on_user_deregistered
from kit.db import make_engine, make_sessionmaker, unit_of_work

pytestmark = pytest.mark.integration

CAB = "ERA-CAB"
# bank: (state, cabinet, lat) after the rental; who held it last
BANKS = {
    "ERA-BACK": ("in_cabinet", CAB, 31.1),  # returned; its last position is from the user's rental
    "ERA-SOLD": ("lost", None, 31.2),  # sold to the user: the position is their home
    "ERA-OTHER": ("rented", None, 31.3),  # rented by someone else now
}


async def test_a_deregistered_users_positions_and_consents_are_forgotten(database_url: str) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM commands WHERE cabinet_id = :c"), {"c": CAB})
            await conn.execute(text("DELETE FROM banks WHERE id LIKE 'ERA-%'"))
            await conn.execute(text("DELETE FROM cabinets WHERE id = :c"), {"c": CAB})
            await conn.execute(
                text("INSERT INTO cabinets (id, name, lat, lon, slot_count) VALUES (:c, 'erasure', 30.5, 114.3, 8)"),
                {"c": CAB},
            )
            for bank, (state, cabinet, lat) in BANKS.items():
                await conn.execute(
                    text(
                        "INSERT INTO banks (id, state, cabinet_id, has_module, lat, lon, position_at, state_changed_at)"
                        " VALUES (:b, :s, :c, true, :lat, 114.0, :pos, :changed)"
                    ),
                    {
                        "b": bank,
                        "s": state,
                        "c": cabinet,
                        "lat": lat,
                        "pos": now - timedelta(minutes=5),
                        "changed": now,
                    },
                )
                renters = [user] if bank != "ERA-OTHER" else [user, other]
                for n, renter in enumerate(renters):
                    await conn.execute(
                        text(
                            "INSERT INTO commands (cmd_id, rental_id, user_id, code, cabinet_id, bank_id, slot, status,"
                            " deadline, created_at) VALUES (:id, :r, :u, :c, :c, :b, 1, 'succeeded', :at, :at)"
                        ),
                        {
                            "id": uuid.uuid4(),
                            "r": uuid.uuid4(),
                            "u": renter,
                            "c": CAB,
                            "b": bank,
                            "at": now - timedelta(hours=1 - n * 0.5),
                        },
                    )
            for who in (user, other):
                await conn.execute(
                    text("INSERT INTO position_consents (user_id, granted) VALUES (:u, true)"), {"u": who}
                )
                await conn.execute(
                    text("INSERT INTO user_light_requests (user_id, cabinet_id) VALUES (:u, :c)"), {"u": who, "c": CAB}
                )

        event = new_event(UserDeregistered(user_id=user, at=now), key=str(user), producer="user-svc")
        for _ in range(2):  # a redelivery changes nothing more
            async with unit_of_work(make_sessionmaker(engine)) as session:
                await on_user_deregistered(session, event)

        async with engine.connect() as conn:
            positions = dict(
                (r.id, (r.lat, r.lon))
                for r in await conn.execute(text("SELECT id, lat, lon FROM banks WHERE id LIKE 'ERA-%'"))
            )
            assert positions == {"ERA-BACK": (30.5, 114.3), "ERA-SOLD": (None, None), "ERA-OTHER": (31.3, 114.0)}
            for who, kept in ((user, 0), (other, 1)):
                for table in ("commands", "position_consents", "user_light_requests"):
                    count = (
                        await conn.execute(text(f"SELECT count(*) FROM {table} WHERE user_id = :u"), {"u": who})
                    ).scalar_one()
                    assert count == kept, (table, who)
            ejects = (
                await conn.execute(text("SELECT count(*) FROM commands WHERE cabinet_id = :c"), {"c": CAB})
            ).scalar()
            assert ejects == 4  # the fleet's record stays, without the user
    finally:
        await engine.dispose()
