"""Value-added services with versioned risk notices: a user accepts the version they read (an outdated
one is refused), a new version makes earlier consent no longer current, withdrawal is a record too, and
the records are append-only evidence staff can read."""

import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration

ADMIN = "/v1/admin/value-added-services"
USER = "/v1/value-added-services"


async def test_consent_to_the_current_risk_notice_version(client, auth, staff, settings):
    operator = staff(roles=("operator",))
    user = uuid.uuid4()
    created = await client.post(
        ADMIN,
        headers=operator,
        json={"code": "damage_cover", "name": "Damage cover", "description": "No charge if the bank breaks"},
    )
    assert created.status_code == 201, created.text
    again = await client.post(ADMIN, headers=operator, json={"code": "damage_cover", "name": "x", "description": "y"})
    assert (again.status_code, again.json()["code"]) == (409, "service_exists")

    async def offer() -> dict[str, Any]:
        items = (await client.get(USER, headers=auth(user))).json()["items"]
        found: dict[str, Any] = next(s for s in items if s["code"] == "damage_cover")
        return found

    assert (await offer())["risk_notice"] is None
    early = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (early.status_code, early.json()["code"]) == (409, "no_risk_notice")

    v1 = await client.post(
        f"{ADMIN}/damage_cover/risk-notices", headers=operator, json={"text": "Cover ends at 30 days."}
    )
    assert v1.json()["version"] == 1
    accepted = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (accepted.status_code, accepted.json()["action"]) == (201, "accepted")
    assert ((await offer())["consented_version"], (await offer())["consent_current"]) == (1, True)

    v2 = await client.post(
        f"{ADMIN}/damage_cover/risk-notices", headers=operator, json={"text": "Cover ends at 14 days."}
    )
    assert v2.json()["version"] == 2
    current = await offer()
    assert (current["risk_notice"]["version"], current["consented_version"], current["consent_current"]) == (
        2,
        1,
        False,
    )
    stale = await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 1})
    assert (stale.status_code, stale.json()["code"], stale.json()["current_version"]) == (
        409,
        "risk_notice_outdated",
        2,
    )
    assert (
        await client.post(f"{USER}/damage_cover/consents", headers=auth(user), json={"version": 2})
    ).status_code == 201
    assert (await client.post(f"{USER}/damage_cover/withdraw", headers=auth(user))).json()["action"] == "withdrawn"
    twice = await client.post(f"{USER}/damage_cover/withdraw", headers=auth(user))
    assert (twice.status_code, twice.json()["code"]) == (409, "not_consented")
    assert (await offer())["consented_version"] is None

    mine = (await client.get(f"{USER}/consents", headers=auth(user))).json()["items"]
    assert [(r["action"], r["version"]) for r in mine] == [("withdrawn", 2), ("accepted", 2), ("accepted", 1)]
    audit = (await client.get(f"{ADMIN}/damage_cover/consents", headers=operator)).json()["items"]
    assert [r["user_id"] for r in audit] == [str(user)] * 3
    other = (await client.get(f"{USER}/consents", headers=auth(uuid.uuid4()))).json()["items"]
    assert other == []

    assert (await client.get(f"{ADMIN}/damage_cover/consents", headers=staff(roles=("support",)))).status_code == 403
    bad = await client.post(f"{USER}/Not-A-Code/consents", headers=auth(user), json={"version": 1})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")
    missing = await client.post(f"{USER}/no_such_service/consents", headers=auth(user), json={"version": 1})
    assert (missing.status_code, missing.json()["code"]) == (404, "service_not_found")

    engine = create_async_engine(settings.database_url)
    try:
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE consent_records SET version = 9"))
    finally:
        await engine.dispose()
