"""Campaigns: the audience projection fed by events, a preview count per rule, consent per channel,
quiet hours, scheduling, delivery/open/click counts."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import (
    BankEjected,
    CouponChanged,
    CouponStatus,
    CreditChanged,
    PriceSnapshot,
    RentalStarted,
    SendSms,
    UserDeregistered,
    UserRegistered,
)
from contracts.regions import RegionRef
from notify_svc.preferences.quiet import release_at

pytestmark = pytest.mark.integration

PRICE = PriceSnapshot(period_minutes=60, price_per_period_fen=100, free_minutes=5, daily_cap_fen=2000)


async def preview(client, staff, segment: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/v1/admin/campaigns/preview", headers=staff(roles=("operator",)), json={"segment": segment}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def seed(settings, sql: str, **params: Any) -> None:
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as conn:
        for statement in sql.split(";"):
            await conn.execute(text(statement), params)
    await engine.dispose()


async def test_the_audience_is_fed_by_events_and_previewed_per_rule(client, staff, bus, wait, settings):
    now = datetime.now(UTC)
    early, late, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for user, at in ((early, now - timedelta(days=400)), (late, now - timedelta(days=3)), (gone, now)):
        await bus.publish(UserRegistered(user_id=user, registered_at=at, terms_version="1"), str(user))
    await bus.publish(UserDeregistered(user_id=gone, at=now), str(gone))
    await bus.publish(
        CreditChanged(
            user_id=early, score=720, delta=20, level="good", deposit_free=True, reason="on_time_return", at=now
        ),
        str(early),
    )
    await bus.publish(
        CreditChanged(user_id=late, score=300, delta=-50, level="poor", deposit_free=False, reason="lost_bank", at=now),
        str(late),
    )
    coupon = uuid.uuid4()
    await bus.publish(
        CouponChanged(
            user_id=late,
            asset_id=coupon,
            status=CouponStatus.AVAILABLE,
            expires_at=now + timedelta(days=7),
            at=now,
        ),
        str(late),
    )
    # early rented in Futian, Shenzhen (the eject names the cabinet's division) 40 days ago.
    rental = uuid.uuid4()
    await bus.publish(
        BankEjected(
            command_id=uuid.uuid4(),
            rental_id=rental,
            bank_id="B-AUD-1",
            cabinet_id="CAB-AUD-1",
            slot=1,
            battery_pct=90,
            ejected_at=now - timedelta(days=40),
            region=RegionRef(division_code="440304"),
        ),
        "CAB-AUD-1",
    )

    async def region_known() -> bool:
        return (await preview(client, staff, {"all_users": True}))["audience"] == 2

    await wait(region_known, what="registrations projected")
    await wait(
        lambda: _scalar(settings, "SELECT count(*) FROM cabinet_regions WHERE cabinet_id = 'CAB-AUD-1'"),
        what="cabinet region projected",
    )
    await bus.publish(
        RentalStarted(
            rental_id=rental,
            user_id=early,
            bank_id="B-AUD-1",
            cabinet_id="CAB-AUD-1",
            slot=1,
            started_at=now - timedelta(days=40),
            price=PRICE,
        ),
        str(rental),
    )

    async def projected() -> bool:
        p = await preview(client, staff, {"regions": ["440300"]})
        c = await preview(client, staff, {"has_unused_coupon": True})
        return p["audience"] == 1 and c["audience"] == 1

    await wait(projected, what="rental region and coupon projected")
    cases: list[tuple[dict[str, Any], int]] = [
        ({"all_users": True}, 2),  # the deregistered user is never selected
        ({"regions": ["440000"]}, 1),  # the province holds the district
        ({"regions": ["440304"]}, 1),
        ({"regions": ["110000"]}, 0),
        ({"credit_levels": ["good"]}, 1),
        ({"credit_levels": ["good", "poor"]}, 2),
        ({"last_active_after": (now - timedelta(days=60)).isoformat()}, 1),
        ({"last_active_before": (now - timedelta(days=30)).isoformat()}, 2),  # early: 40 days; late: never
        ({"last_active_before": (now - timedelta(days=50)).isoformat()}, 1),
        ({"has_unused_coupon": True}, 1),
        ({"has_unused_coupon": False}, 1),
        ({"registered_after": (now - timedelta(days=10)).isoformat()}, 1),
        (
            {
                "registered_after": (now - timedelta(days=500)).isoformat(),
                "registered_before": (now - timedelta(days=10)).isoformat(),
            },
            1,
        ),
        ({"credit_levels": ["good"], "has_unused_coupon": True}, 0),
    ]
    for segment, expected in cases:
        assert (await preview(client, staff, segment))["audience"] == expected, segment

    # The coupon used: no longer an unused coupon (a late "available" would not revive it).
    await bus.publish(
        CouponChanged(
            user_id=late, asset_id=coupon, status=CouponStatus.USED, expires_at=now + timedelta(days=7), at=now
        ),
        str(late),
    )

    async def used() -> bool:
        return (await preview(client, staff, {"has_unused_coupon": True}))["audience"] == 0

    await wait(used, what="coupon used projected")

    for bad in ({}, {"all_users": True, "credit_levels": ["good"]}, {"regions": ["999999"]}, {"nope": 1}):
        response = await client.post(
            "/v1/admin/campaigns/preview", headers=staff(roles=("operator",)), json={"segment": bad}
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_error"), bad
    refused = await client.post(
        "/v1/admin/campaigns/preview", headers=staff(roles=("support",)), json={"segment": {"all_users": True}}
    )
    assert refused.status_code == 403


async def _scalar(settings, sql: str, **params: Any) -> Any:
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as conn:
        value = (await conn.execute(text(sql), params)).scalar()
    await engine.dispose()
    return value


async def _campaign(client, staff, *, channels: list[str], segment: dict[str, Any] | None = None) -> str:
    body = {
        "title": "Half price this weekend",
        "text": "Rent any bank at half price on Saturday and Sunday.",
        "segment": segment or {"all_users": True},
        "channels": channels,
    }
    response = await client.post("/v1/admin/campaigns", headers=staff(roles=("operator",)), json=body)
    assert response.status_code == 201, response.text
    campaign_id: str = response.json()["campaign_id"]
    return campaign_id


async def _sent(client, staff, wait, campaign_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        c = (await client.get(f"/v1/admin/campaigns/{campaign_id}", headers=staff(roles=("operator",)))).json()
        return c if c["status"] == "sent" else None

    result: dict[str, Any] = await wait(done, what="campaign sent")
    return result


async def _prefs(client, auth, user, **body: Any) -> None:
    response = await client.put("/v1/preferences", headers=auth(user), json=body)
    assert response.status_code == 200, response.text


async def test_marketing_goes_only_where_consented_and_waits_for_quiet_hours(
    client, auth, staff, settings, wait, recorder
):
    now = datetime.now(UTC)
    everything, nothing, quiet, inbox_only, owl = (uuid.uuid4() for _ in range(5))
    await seed(
        settings,
        "INSERT INTO audience (user_id, registered_at) SELECT unnest(CAST(:users AS uuid[])), now()",
        users=[everything, nothing, quiet, inbox_only, owl],
    )
    for n, user in enumerate((everything, nothing, quiet)):
        await client.put("/v1/push-tokens", headers=auth(user), json={"platform": "ios", "token": f"apns-tok-{n}-xyz"})
    await _prefs(client, auth, everything, marketing={"inbox": True, "push": True, "sms": True})
    # Quiet hours around this moment in the user's zone: the push and the SMS wait for their end.
    start = (now - timedelta(hours=1)).strftime("%H:%M")
    end = (now + timedelta(hours=2)).strftime("%H:%M")
    for user, marketing in ((quiet, {"inbox": True, "push": True, "sms": True}), (owl, {"sms": True})):
        await _prefs(client, auth, user, marketing=marketing, quiet_hours={"start": start, "end": end}, timezone="UTC")
    await _prefs(client, auth, inbox_only, marketing={"inbox": True})
    assert (await client.get("/v1/preferences", headers=auth(nothing))).json()["marketing"] == {
        "inbox": False,
        "push": False,
        "sms": False,
    }
    bad = await client.put("/v1/preferences", headers=auth(nothing), json={"marketing": {}, "timezone": "Mars/Base"})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_error")

    reach = await preview(client, staff, {"all_users": True})
    assert reach == {"audience": 5, "reachable": {"inbox": 3, "push": 2, "sms": 3}}

    campaign_id = await _campaign(client, staff, channels=["inbox", "push", "sms"])
    scheduled = await client.post(
        f"/v1/admin/campaigns/{campaign_id}/schedule", headers=staff(roles=("operator",)), json={}
    )
    assert scheduled.status_code == 200, scheduled.text
    campaign = await _sent(client, staff, wait, campaign_id)
    assert campaign["stats"]["recipients"] == 4
    assert campaign["stats"]["inbox_delivered"] == 3
    assert campaign["stats"]["push_queued"] == 2
    assert campaign["stats"]["sms_sent"] == 1
    assert campaign["stats"]["sms_deferred"] == 2  # quiet's and owl's, held for the end of their quiet hours
    assert campaign["stats"]["unreached"] == 1

    # Nothing for the user who gave no consent: no message, no push, no SMS.
    assert (await client.get("/v1/messages", headers=auth(nothing))).json()["items"] == []
    assert (await client.get(f"/v1/admin/users/{nothing}/pushes", headers=staff())).json()["items"] == []
    await recorder.wait_for(
        lambda e: isinstance(e.data, SendSms) and e.data.user_id == everything and e.data.reason == "marketing"
    )
    assert not [e for e in recorder.seen if isinstance(e.data, SendSms) and e.data.user_id in (nothing, quiet, owl)]

    async def delivered() -> bool:
        c = (await client.get(f"/v1/admin/campaigns/{campaign_id}", headers=staff(roles=("operator",)))).json()
        return c["stats"]["push_delivered"] == 1

    await wait(delivered, what="the consenting user's push delivered")
    waiting = (await client.get(f"/v1/admin/users/{quiet}/pushes", headers=staff())).json()["items"]
    assert len(waiting) == 1 and waiting[0]["outcome"] is None  # held until the quiet hours end
    # Consent withdrawn while it waits: when its time comes it is not sent (push and SMS). The quiet hours
    # end (moved to now): owl, who still consents, gets the held SMS then.
    await _prefs(client, auth, quiet, marketing={"inbox": True, "push": False, "sms": False})
    await seed(settings, "UPDATE push_jobs SET next_attempt_at = now() WHERE user_id = :u", u=quiet)
    await seed(settings, "UPDATE deferred_sms SET due_at = now()")
    await recorder.wait_for(
        lambda e: isinstance(e.data, SendSms) and e.data.user_id == owl and e.data.reason == "marketing"
    )

    async def sms_settled() -> dict[str, Any] | None:
        c = (await client.get(f"/v1/admin/campaigns/{campaign_id}", headers=staff(roles=("operator",)))).json()
        return c if c["stats"]["sms_sent"] == 2 else None

    await wait(sms_settled, what="the held SMS counted once sent")
    assert not [e for e in recorder.seen if isinstance(e.data, SendSms) and e.data.user_id == quiet]

    async def dropped() -> list[Any] | None:
        jobs: list[Any] = (await client.get(f"/v1/admin/users/{quiet}/pushes", headers=staff())).json()["items"]
        return jobs if jobs[0]["outcome"] else None

    assert (await wait(dropped, what="the withdrawn push settled"))[0]["outcome"] == "no_consent"


async def test_quiet_hours_span_midnight() -> None:
    at = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)  # 07:30 in Shanghai
    assert release_at(at, 22 * 60, 8 * 60, "Asia/Shanghai") == datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
    assert release_at(at, 22 * 60, 7 * 60, "Asia/Shanghai") == at
    assert release_at(at, 7 * 60, 9 * 60, "UTC") == at
    assert release_at(at, 23 * 60, 23 * 60 + 45, "UTC") == datetime(2026, 12, 5, 23, 45, tzinfo=UTC)


async def test_a_scheduled_campaign_waits_for_its_time_and_counts_opens_and_clicks(client, auth, staff, settings, wait):
    users = [uuid.uuid4() for _ in range(3)]
    await seed(
        settings,
        "INSERT INTO audience (user_id, registered_at) SELECT unnest(CAST(:users AS uuid[])), now();"
        "INSERT INTO preferences (user_id, marketing_inbox, marketing_push, marketing_sms, timezone, updated_at)"
        " SELECT unnest(CAST(:users AS uuid[])), true, false, false, 'UTC', now()",
        users=users,
    )
    campaign_id = await _campaign(client, staff, channels=["inbox"])
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    scheduled = await client.post(
        f"/v1/admin/campaigns/{campaign_id}/schedule",
        headers=staff(roles=("operator",)),
        json={"send_at": send_at.isoformat()},
    )
    assert scheduled.json()["status"] == "scheduled"

    async def inbox_of(user: uuid.UUID) -> list[Any]:
        items: list[Any] = (await client.get("/v1/messages", headers=auth(user))).json()["items"]
        return items

    async def arrived() -> list[Any] | None:
        items = await inbox_of(users[0])
        if not items:
            assert datetime.now(UTC) < send_at + timedelta(seconds=30)
            return None
        return items

    assert await inbox_of(users[0]) == []  # not before its time
    items = await wait(arrived, what="the scheduled campaign", timeout=30)
    assert datetime.fromisoformat(items[0]["created_at"]) >= send_at
    assert items[0]["category"] == "marketing"
    campaign = await _sent(client, staff, wait, campaign_id)
    assert campaign["stats"]["inbox_delivered"] == 3
    assert datetime.fromisoformat(campaign["started_at"]) >= send_at

    first = (await inbox_of(users[0]))[0]["message_id"]
    for _ in range(2):  # read twice, click twice: one open, one click
        assert (await client.post(f"/v1/messages/{first}/read", headers=auth(users[0]))).status_code == 200
        assert (await client.post(f"/v1/messages/{first}/click", headers=auth(users[0]))).status_code == 204
    second = (await inbox_of(users[1]))[0]["message_id"]
    assert (await client.post(f"/v1/messages/{second}/click", headers=auth(users[1]))).status_code == 204
    stats = (await client.get(f"/v1/admin/campaigns/{campaign_id}", headers=staff(roles=("operator",)))).json()
    assert (stats["stats"]["opened"], stats["stats"]["clicked"]) == (2, 2)
    # Someone else's message is not found; a non-campaign message cannot be clicked.
    stranger = await client.post(f"/v1/messages/{first}/click", headers=auth(users[2]))
    assert (stranger.status_code, stranger.json()["code"]) == (404, "message_not_found")
    cancelled = await client.post(f"/v1/admin/campaigns/{campaign_id}/cancel", headers=staff(roles=("operator",)))
    assert (cancelled.status_code, cancelled.json()["code"]) == (409, "campaign_transition_not_allowed")
    missing = await client.get(f"/v1/admin/campaigns/{uuid.uuid4()}", headers=staff(roles=("operator",)))
    assert (missing.status_code, missing.json()["code"]) == (404, "campaign_not_found")


async def test_a_published_notice_is_pushed_to_every_phone_without_marketing_consent(
    client, auth, staff, settings, wait
):
    user = uuid.uuid4()
    await seed(settings, "INSERT INTO audience (user_id, registered_at) VALUES (:u, now())", u=user)
    await client.put("/v1/push-tokens", headers=auth(user), json={"platform": "android", "token": "fcm:notice-0001"})
    notice = (
        await client.post(
            "/v1/admin/notices", headers=staff(), json={"kind": "operations", "title": "Maintenance", "text": "Tonight"}
        )
    ).json()
    assert (await client.post(f"/v1/admin/notices/{notice['notice_id']}/publish", headers=staff())).status_code == 200

    async def pushed() -> list[Any] | None:
        jobs: list[Any] = (await client.get(f"/v1/admin/users/{user}/pushes", headers=staff())).json()["items"]
        return jobs if jobs and jobs[0]["outcome"] else None

    jobs = await wait(pushed, what="the notice pushed")
    assert (jobs[0]["title"], jobs[0]["outcome"]) == ("Maintenance", "delivered")
