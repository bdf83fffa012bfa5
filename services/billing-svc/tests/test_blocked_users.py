"""A user blocked in user-svc cannot borrow: billing-svc projects user.users.v1 (issue #3)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import text

from contracts.events import UserBlocked, UserUnblocked
from kit.auth import TokenSigner

if TYPE_CHECKING:
    from conftest import Billing, FakeDevice


async def _status(billing: Billing, user_id: uuid.UUID, want: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while loop.time() < end:
        async with billing.runtime.sessionmaker() as session:
            status = (
                await session.execute(text("SELECT status FROM user_access WHERE user_id = :u"), {"u": user_id})
            ).scalar_one_or_none()
        if status == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"user_access for {user_id} never became {want}")


async def test_blocked_user_cannot_borrow(billing: Billing, device: FakeDevice, signer: TokenSigner) -> None:
    user_id = uuid.uuid4()
    headers = {"Authorization": f"Bearer {signer.issue(str(user_id))}"}
    await device.emit(UserBlocked(user_id=user_id, reason="fraud", at=datetime.now(UTC)), key=str(user_id))
    await _status(billing, user_id, "blocked")

    response = await billing.client.post("/v1/rentals", json={"code": "PB-ANY"}, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "user_blocked"
    async with billing.runtime.sessionmaker() as session:
        count = (
            await session.execute(text("SELECT count(*) FROM rentals WHERE user_id = :u"), {"u": user_id})
        ).scalar_one()
    assert count == 0

    # an unblock lets the user through the check again
    await device.emit(UserUnblocked(user_id=user_id, at=datetime.now(UTC)), key=str(user_id))
    await _status(billing, user_id, "active")
    response = await billing.client.post("/v1/rentals", json={"code": "PB-ANY"}, headers=headers)
    assert response.json().get("code") != "user_blocked", response.text
