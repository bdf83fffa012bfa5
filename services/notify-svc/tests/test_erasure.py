"""Deregistration (issue 15): notify-svc forgets the user's inbox, push tokens, waiting pushes and
preferences and erases the phone number of their callback requests; tickets stay (real PostgreSQL)."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts import new_event
from contracts.events import UserDeregistered
from kit.db import make_sessionmaker, unit_of_work
from notify_svc.audience.consumers import on_user_deregistered


async def test_a_deregistered_users_personal_data_is_forgotten(client, auth, settings) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    for who, phone in ((user, "+8613900001111"), (other, "+8613900002222")):
        token = {"platform": "ios", "token": f"apns-erase-{who.hex}"}
        assert (await client.put("/v1/push-tokens", headers=auth(who), json=token)).status_code < 300
        called = await client.post("/v1/callbacks", headers=auth(who), json={"phone": phone, "topic": "refund"})
        assert called.status_code == 201, called.text
    engine = create_async_engine(settings.database_url)
    try:
        event = new_event(UserDeregistered(user_id=user, at=datetime.now(UTC)), key=str(user), producer="user-svc")
        async with unit_of_work(make_sessionmaker(engine)) as session:
            await on_user_deregistered(session, event)
        async with engine.connect() as conn:

            async def rows(query: str, who: uuid.UUID) -> list[object]:
                return list((await conn.execute(text(query), {"u": who})).scalars())

            for who, kept in ((user, False), (other, True)):
                assert bool(await rows("SELECT token FROM push_tokens WHERE user_id = :u", who)) is kept
                calls = (
                    await conn.execute(text("SELECT phone, status FROM callbacks WHERE user_id = :u"), {"u": who})
                ).all()
                assert [tuple(c) for c in calls] == ([("+8613900002222", "requested")] if kept else [("", "cancelled")])
                assert len(await rows("SELECT id FROM tickets WHERE user_id = :u", who)) == 1  # the record stays
    finally:
        await engine.dispose()
