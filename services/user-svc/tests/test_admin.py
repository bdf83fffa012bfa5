"""Staff administration of users: block/unblock, masking and reveal, permissions, input, eligibility audit."""

import json
import uuid
from datetime import UTC, datetime

import pytest

from contracts import Envelope
from contracts.events import UserRegistered
from kit.testing import app_client
from user_svc.main import create_app

from .support import (
    OTHER,
    PASSWORD,
    PHONE,
    admin_token,
    assert_problem,
    bearer,
    login,
    new_admin,
    refresh,
    register,
    registration,
    sms_code,
    sql,
)

pytestmark = pytest.mark.integration


async def test_admin_block_and_unblock_a_user(client, database_url):
    user_id = (await register(client))["user_id"]
    session = await login(client)
    support = await new_admin(client, "support")

    found = await client.get("/v1/admin/users", params={"q": "138001"}, headers=bearer(support))
    assert found.status_code == 200, found.text
    assert [u["user_id"] for u in found.json()] == [user_id]
    assert (await client.get("/v1/admin/users", params={"q": "%"}, headers=bearer(support))).json() == []
    viewed = await client.get(f"/v1/admin/users/{user_id}", headers=bearer(support))
    assert viewed.json()["status"] == "active"

    blocked = await client.post(
        f"/v1/admin/users/{user_id}/block", json={"reason": "fraud report #42"}, headers=bearer(support)
    )
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "blocked"
    again = await client.post(f"/v1/admin/users/{user_id}/block", json={"reason": "x"}, headers=bearer(support))
    assert_problem(again, 409, "user_already_blocked")
    # the user's sessions ended, and a correct login says why it is refused
    assert_problem(await client.get("/v1/users/me", headers=bearer(session["access_token"])), 401, "token_revoked")
    assert_problem(await refresh(client, session["refresh_token"]), 401, "invalid_refresh_token")
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": PASSWORD}), 403, "account_blocked"
    )
    assert_problem(
        await client.post("/v1/sessions", json={"login": PHONE, "password": "wrong password"}),
        401,
        "invalid_credentials",
    )
    assert (await client.get("/v1/admin/users", params={"status": "blocked"}, headers=bearer(support))).json()[0][
        "user_id"
    ] == user_id

    unblocked = await client.post(
        f"/v1/admin/users/{user_id}/unblock", json={"reason": "cleared"}, headers=bearer(support)
    )
    assert unblocked.status_code == 200 and unblocked.json()["status"] == "active"
    assert_problem(
        await client.post(f"/v1/admin/users/{user_id}/unblock", json={"reason": "x"}, headers=bearer(support)),
        409,
        "user_not_blocked",
    )
    await login(client)

    # events went out through the outbox, in order (the ended session's token ids first, for every service)
    rows = await sql(database_url, "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", user_id)
    assert [r["event_type"] for r in rows] == [
        "user.user.registered",
        "user.session.revoked",
        "user.user.blocked",
        "user.user.unblocked",
    ]

    # every action is in the audit log, queryable
    root = await admin_token(client)
    log_rows = (await client.get("/v1/admin/audit-log", params={"target_id": user_id}, headers=bearer(root))).json()
    assert [r["action"] for r in log_rows] == ["user.unblock", "user.block", "user.view"]
    assert log_rows[1]["reason"] == "fraud report #42" and log_rows[1]["admin_roles"] == ["support"]
    searches = (await client.get("/v1/admin/audit-log", params={"action": "user.search"}, headers=bearer(root))).json()
    assert len(searches) == 3
    created = (await client.get("/v1/admin/audit-log", params={"action": "admin.create"}, headers=bearer(root))).json()
    assert created[0]["details"] == {
        "before": {},
        "after": {"login": "support-1", "role": "support", "must_change_password": False},
    }
    assert log_rows[1]["details"] == {"before": {"status": "active"}, "after": {"status": "blocked"}}


async def test_staff_see_personal_data_masked_and_a_reveal_is_audited(client, database_url):
    user_id = (await register(client))["user_id"]
    support = await new_admin(client, "support")  # holds users:pii
    operator = await new_admin(client, "operator")  # does not
    for token in (support, operator):
        (found,) = (await client.get("/v1/admin/users", params={"q": "138001"}, headers=bearer(token))).json()
        assert (found["phone"], found["display_name"], found["masked"]) == ("+86138****8000", "小*", True)
        viewed = (await client.get(f"/v1/admin/users/{user_id}", headers=bearer(token))).json()
        assert PHONE not in json.dumps(viewed) and viewed["masked"] is True
    refused = await client.get(f"/v1/admin/users/{user_id}", params={"reveal": "true"}, headers=bearer(operator))
    assert_problem(refused, 403, "forbidden")
    revealed = (
        await client.get(f"/v1/admin/users/{user_id}", params={"reveal": "true"}, headers=bearer(support))
    ).json()
    assert (revealed["phone"], revealed["display_name"], revealed["masked"]) == (PHONE, "小明", False)
    rows = await sql(database_url, "SELECT action, admin_roles FROM admin_actions WHERE action = 'user.pii_reveal'")
    assert [(r["action"], r["admin_roles"]) for r in rows] == [("user.pii_reveal", "support")]


async def test_admin_permissions(client):
    user_id = (await register(client))["user_id"]
    user = (await login(client))["access_token"]
    analyst = await new_admin(client, "analyst")
    finance = await new_admin(client, "finance")
    support = await new_admin(client, "support")
    block = f"/v1/admin/users/{user_id}/block"
    for token in (user, analyst, finance):
        assert_problem(await client.post(block, json={"reason": "x"}, headers=bearer(token)), 403, "forbidden")
    assert_problem(await client.get("/v1/admin/users", headers=bearer(analyst)), 403, "forbidden")
    assert (await client.get("/v1/admin/users", headers=bearer(finance))).status_code == 200
    for token in (support, finance, analyst):
        assert_problem(await client.get("/v1/admin/audit-log", headers=bearer(token)), 403, "forbidden")
        r = await client.post(
            "/v1/admin/admins",
            json={"login": "sneaky", "password": "admin-pass-123", "role": "super_admin"},
            headers=bearer(token),
        )
        assert_problem(r, 403, "forbidden")
    assert_problem(await client.get("/v1/admin/users"), 401, "unauthorized")
    # the dev outbox is for roles with dev:read (support, super_admin)
    assert (await client.get("/v1/dev/messages", headers=bearer(support))).status_code == 200
    assert_problem(await client.get("/v1/dev/messages", headers=bearer(analyst)), 403, "forbidden")


async def test_admin_input_is_validated(client):
    root = await admin_token(client)
    headers = bearer(root)
    assert_problem(await client.get("/v1/admin/users/not-a-uuid", headers=headers), 422, "validation_error")
    assert_problem(await client.get(f"/v1/admin/users/{uuid.uuid4()}", headers=headers), 404, "user_not_found")
    assert_problem(
        await client.post(f"/v1/admin/users/{uuid.uuid4()}/block", json={"reason": "x"}, headers=headers),
        404,
        "user_not_found",
    )
    user_id = (await register(client))["user_id"]
    assert_problem(
        await client.post(f"/v1/admin/users/{user_id}/block", json={"reason": ""}, headers=headers),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post(
            "/v1/admin/admins", json={"login": "x1", "password": "admin-pass-123", "role": "king"}, headers=headers
        ),
        422,
        "validation_error",
    )
    body = {"login": "ops-1", "password": "admin-pass-123", "role": "operator"}
    assert (await client.post("/v1/admin/admins", json=body, headers=headers)).status_code == 201
    assert_problem(await client.post("/v1/admin/admins", json=body, headers=headers), 409, "admin_login_taken")
    assert_problem(
        await client.get("/v1/admin/users", params={"status": "weird"}, headers=headers), 422, "validation_error"
    )


# --- eligibility audit ---------------------------------------------------------------------------


async def test_eligibility_audit_rejects_with_reasons_and_records_every_decision(client, settings, database_url):
    strict = settings.model_copy(
        update={
            "eligibility_blocked_numbers": ["+86170"],
            "eligibility_credit_blacklist": [OTHER],
            "eligibility_min_age_years": 18,
        }
    )
    today = datetime.now(UTC).date()
    async with app_client(create_app(strict)) as c:
        blocked = "+8617012345678"
        r = await c.post("/v1/users", json=registration(phone=blocked, sms_code=await sms_code(c, blocked)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["number_blocked"]
        r = await c.post("/v1/users", json=registration(phone=OTHER, sms_code=await sms_code(c, OTHER)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["credit_blacklisted"]
        young = today.replace(year=today.year - 17).isoformat() if today.month != 2 or today.day != 29 else "2010-03-01"
        r = await c.post("/v1/users", json=registration(birth_date=young, sms_code=await sms_code(c)))
        assert assert_problem(r, 403, "registration_rejected")["reasons"] == ["under_minimum_age"]
        adult = f"{today.year - 30}-01-15"
        r = await c.post("/v1/users", json=registration(birth_date=adult, sms_code=await sms_code(c)))
        assert r.status_code == 201, r.text
        r = await c.post("/v1/users", json=registration(sms_code=await sms_code(c)))
        assert assert_problem(r, 409, "phone_taken")["reasons"] == ["duplicate_identity"]
        assert_problem(
            await c.post("/v1/users", json=registration(birth_date="not-a-date", sms_code="123456")),
            422,
            "validation_error",
        )
    rows = await sql(
        database_url, "SELECT phone, accepted, reasons, rules, user_id FROM eligibility_decisions ORDER BY id"
    )
    assert [(r["accepted"], json.loads(r["reasons"])) for r in rows] == [
        (False, ["number_blocked"]),
        (False, ["credit_blacklisted"]),
        (False, ["under_minimum_age"]),
        (True, []),
        (False, ["duplicate_identity"]),
    ]
    assert rows[3]["user_id"] is not None and json.loads(rows[3]["rules"])["min_age_years"] == 18
    # rejected registrations created nobody and sent no event
    assert len(await sql(database_url, "SELECT 1 FROM users")) == 1
    (registered,) = await sql(database_url, "SELECT payload FROM outbox")
    # analytics' age bands get the birth year, never the date
    data = Envelope.model_validate_json(bytes(registered["payload"])).data
    assert isinstance(data, UserRegistered) and data.birth_year == today.year - 30
    assert adult not in bytes(registered["payload"]).decode()
