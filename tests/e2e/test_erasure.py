"""Erasure across the mesh (issue 15): a user registers, consents to see their bank's position, rents and
returns, then deregisters; afterwards no database holds their phone number outside what docs/accounts.md
"Erasure" says is kept and for how long, and nothing ties the user to a place: device-svc's ejects and
consent, analytics' rentals and active days no longer name them. Rentals and money stay (billing,
asset-credit), by user id."""

import os
import uuid
from typing import Any

import pytest
from mesh import Mesh
from platform_client import wait_for
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from test_rental_flow import _cabinet_with_bank, _cabinet_with_free_slot, _rental_in

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-password-1"
SERVICES = ("USER", "DEVICE", "BILLING", "ASSET", "NOTIFY", "ANALYTICS")
# Where the number may stay, and why (docs/accounts.md "Erasure" and "Retention").
KEPT = {
    ("USER", "users"),  # former_phone: 180 days after deregistration (DEREGISTRATION_RETENTION_S), then cleared
    ("USER", "eligibility_decisions"),  # the registration's decision: its number cleared with former_phone
    ("USER", "verification_codes"),  # the SMS log: 30 days
    ("USER", "dev_messages"),  # the sandbox SMS outbox (not in production): 7 days
}
# Tables that name the user by id and place or consent, which must not after erasure.
PLACES = {
    "DEVICE": ("commands", "position_consents", "user_light_requests"),
    "ANALYTICS": ("rental_facts", "user_days", "active_user_periods"),
}


def _url(service: str) -> str:
    return os.environ[f"{service}_DATABASE_URL"]


async def _tables_holding(conn: AsyncConnection, needle: str) -> list[str]:
    """Every table with a row whose text (all columns) contains `needle`."""
    tables = await conn.execute(
        text(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
        )
    )
    found = []
    for (table,) in tables:
        hit = await conn.execute(text(f"SELECT 1 FROM {table} t WHERE CAST(t AS text) LIKE :n LIMIT 1"), {"n": needle})
        if hit.first() is not None:
            found.append(table.removeprefix("public."))
    return found


async def test_a_deregistered_user_is_gone_from_every_service(mesh: Mesh) -> None:
    api = mesh.client()
    phone = f"+86137{uuid.uuid4().int % 100_000_000:08d}"
    assert (await api.register(phone, PASSWORD)).status == 201
    assert (await api.login(phone, PASSWORD)).status == 200
    consent = await api.call("PUT", f"{api.urls.device}/v1/banks/rented-by-me/position-consent", json={"granted": True})
    assert consent.status == 200, consent.response.text
    top_up = await api.top_up(500)
    assert top_up.status == 201, top_up.response.text

    async def paid() -> bool:
        status: str = (await api.top_up_status(top_up.json()["top_up_id"])).json()["status"]
        return status == "succeeded"

    await wait_for(paid, timeout_s=10)
    source = await _cabinet_with_bank(api)
    borrowed = await api.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    target = await _cabinet_with_free_slot(api, exclude=source["id"])
    cabinet = mesh.fleet[target["id"]]
    assert (await cabinet.wait_ack(await cabinet.return_bank(rental["bank_id"]), timeout_s=5)) is not None
    await _rental_in(api, rental["rental_id"], {"settled"})

    async def deregistered() -> Any:
        answer = await api.call("POST", f"{api.urls.user}/v1/users/me/deregistration", json={"password": PASSWORD})
        assert answer.status in (200, 409), answer.response.text  # 409: the rental's end or payment not seen yet
        return answer.json() if answer.status == 200 else None

    user_id = (await wait_for(deregistered, timeout_s=20, interval_s=0.5))[0]["user_id"]

    engines = {service: create_async_engine(_url(service)) for service in SERVICES}
    try:

        async def erased() -> bool:
            for service, tables in PLACES.items():
                async with engines[service].connect() as conn:
                    for table in tables:
                        sql = f"SELECT 1 FROM {table} WHERE user_id = :u LIMIT 1"
                        if (await conn.execute(text(sql), {"u": user_id})).first() is not None:
                            return False
            return True

        await wait_for(erased, timeout_s=30, interval_s=0.5)
        holding = []
        for service, engine in engines.items():
            async with engine.connect() as conn:
                holding += [(service, table) for table in await _tables_holding(conn, f"%{phone}%")]
        assert set(holding) <= KEPT, holding
        async with engines["BILLING"].connect() as conn:
            kept = await conn.execute(text("SELECT fee_fen FROM rentals WHERE id = :r"), {"r": rental["rental_id"]})
            assert kept.scalar_one() is not None  # the rental and its money stay
    finally:
        for engine in engines.values():
            await engine.dispose()
