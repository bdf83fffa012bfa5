"""Integration: the finance report is the ledger summed (real PG, money moved through the real flows): its
totals add up to zero, each account kind's closing equals the accounts' balances, and a period split in two
gives the same movements."""

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from contracts.events import ChargeRequested
from kit.db import unit_of_work
from kit.testing import eventually

pytestmark = pytest.mark.integration


async def report(svc: Any, since: datetime, until: datetime) -> dict[str, Any]:
    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}
    params = {"since": since.isoformat(), "until": until.isoformat()}
    response = await svc.client.get("/v1/admin/finance/ledger-report", params=params, headers=finance)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_ledger_report_reconciles_with_the_ledger(svc: Any) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    alice, bob = await svc.funded_user(5000), await svc.funded_user(1200)
    middle = datetime.now(UTC)
    for user, fee in ((alice, 350), (bob, 150), (alice, 200)):
        request = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=fee)
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            assert await charges.settle(session, svc.runtime, request, uuid.uuid4()) == "settled"
    end = datetime.now(UTC) + timedelta(seconds=1)

    whole = await report(svc, start, end)
    assert whole["closing_sum_fen"] == 0 and whole["period_sum_fen"] == 0  # debits equal credits
    assert whole["revenue_fen"] == 700
    assert whole["owed_to_users_fen"] == 5000 + 1200 - 700 == await svc.balance(alice) + await svc.balance(bob)
    async with svc.runtime.engine.connect() as conn:
        balances = dict((await conn.execute(text("SELECT kind, SUM(balance_fen) FROM accounts GROUP BY kind"))).all())
    assert {k["account_kind"]: k["closing_fen"] for k in whole["accounts"]} == balances
    movements = {(m["transaction_kind"], m["account_kind"]): m["net_fen"] for m in whole["movements"]}
    assert movements[("top_up", "user_balance")] == 6200 and movements[("charge", "platform_revenue")] == 700
    assert sum(movements.values()) == 0

    # The period split in two: the first half's closing is the second's opening, and the movements add up.
    first, second = await report(svc, start, middle), await report(svc, middle, end)
    closed = {k["account_kind"]: k["closing_fen"] for k in first["accounts"]}
    opened = {k["account_kind"]: k["opening_fen"] for k in second["accounts"]}
    assert all(closed.get(kind, 0) == opened.get(kind, 0) for kind in balances)
    assert first["revenue_fen"] + second["revenue_fen"] == 700
    assert first["period_sum_fen"] == second["period_sum_fen"] == 0

    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}
    params = {"since": end.isoformat(), "until": start.isoformat()}
    backwards = await svc.client.get("/v1/admin/finance/ledger-report", params=params, headers=finance)
    assert backwards.json()["code"] == "invalid_period"
    refused = await svc.client.get("/v1/admin/finance/ledger-report", params=params, headers=svc.auth(alice))
    assert refused.status_code == 403


async def test_the_reports_of_a_seeded_month_reconcile_with_the_ledger(svc: Any) -> None:
    """Money moved through the real flows (top-ups, a deposit paid and refunded, charges with a card, a coupon and
    a red packet, a refund, a channel's fees, an unpaid fee), its ledger transactions then spread over November
    2026 (Beijing), one just after it: the revenue report, the daily movements and the ledger report agree."""
    from asset_credit_svc.refunds import service as refunds
    from asset_credit_svc.statements.service import book_fees
    from contracts.events import RefundRequested

    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}

    async def get(path: str, **params: Any) -> Any:
        response = await svc.client.get(path, params=params, headers=finance)
        assert response.status_code == 200, response.text
        return response.json() if params.get("format") != "csv" else response.text

    async def template(**body: Any) -> str:
        body = {"name": "promo", "valid_days": 30, **body}
        response = await svc.client.post("/v1/admin/asset-templates", json=body, headers=finance)
        assert response.status_code == 201, response.text
        return str(response.json()["template_id"])

    async def issue(template_id: str, user: uuid.UUID) -> None:
        response = await svc.client.post(
            f"/v1/admin/asset-templates/{template_id}/issues",
            json={"user_ids": [str(user)]},
            headers={**finance, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code in (200, 201), response.text

    async def settle(user: uuid.UUID, fee: int, region: str | None, minutes: int | None = None) -> ChargeRequested:
        request = ChargeRequested(
            charge_id=uuid.uuid4(),
            rental_id=uuid.uuid4(),
            user_id=user,
            amount_fen=fee,
            duration_seconds=minutes * 60 if minutes else None,
            region_code=region,
        )
        async with unit_of_work(svc.runtime.sessionmaker) as session:
            await charges.settle(session, svc.runtime, request, uuid.uuid4())
        return request

    alice, bob, carol = await svc.funded_user(5000), await svc.funded_user(2000), uuid.uuid4()
    response = await svc.client.post(
        "/v1/deposit/payments", json={"channel": "wechat"}, headers={**svc.auth(bob), "Idempotency-Key": "d1"}
    )
    assert response.status_code == 201, response.text

    async def deposit_held() -> bool:
        return bool((await svc.client.get("/v1/deposit", headers=svc.auth(bob))).json()["held_fen"])

    await eventually(deposit_held, timeout=10, what="the deposit held")
    response = await svc.client.post("/v1/deposit/refunds", headers={**svc.auth(bob), "Idempotency-Key": "d2"})
    assert response.status_code in (200, 201, 202), response.text
    await issue(await template(kind="card", card_minutes=60), alice)
    await issue(await template(kind="coupon", amount_off_fen=100), alice)
    await issue(await template(kind="red_packet", amount_fen=50), bob)
    nanshan, pudong = "440305", "310115"
    await settle(alice, 350, nanshan, minutes=120)  # the card pays 60/120 of it (175), the coupon 100
    await settle(bob, 150, pudong)  # the red packet pays 50
    third = await settle(alice, 200, nanshan)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        refund = RefundRequested(
            refund_id=uuid.uuid4(), rental_id=third.rental_id, user_id=alice, amount_fen=50, reason="correction"
        )
        assert await refunds.refund(session, svc.runtime, refund, uuid.uuid4()) == "settled"
        await book_fees(session, "alipay", datetime(2026, 11, 20).date(), 42)
    await settle(carol, 120, None)  # an empty wallet and no channel: unpaid, owed
    late = await settle(bob, 80, None)  # moved just past the month's end below

    # Spread the month: each transaction on its own day of November (Beijing noon), the last charge at 00:30
    # on 1 December (Beijing), which is still 30 November in UTC.
    async with svc.runtime.engine.begin() as conn:
        # The ledger is append-only (a trigger refuses updates); a test seeding the past steps around it.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        ids = [row[0] for row in (await conn.execute(text("SELECT id FROM ledger_transactions ORDER BY created_at")))]
        [(late_tx,)] = (
            await conn.execute(text("SELECT transaction_id FROM charges WHERE charge_id = :c"), {"c": late.charge_id})
        ).all()
        for day, tx in enumerate(ids, start=1):
            at = datetime(2026, 11, day, 4, tzinfo=UTC) if tx != late_tx else datetime(2026, 11, 30, 16, 30, tzinfo=UTC)
            await conn.execute(
                text("UPDATE ledger_transactions SET created_at = :at WHERE id = :id"), {"at": at, "id": tx}
            )
            await conn.execute(
                text("UPDATE postings SET created_at = :at WHERE transaction_id = :id"), {"at": at, "id": tx}
            )
    beijing = timezone(timedelta(hours=8))
    month = {
        "since": datetime(2026, 11, 1, tzinfo=beijing).isoformat(),
        "until": datetime(2026, 12, 1, tzinfo=beijing).isoformat(),
    }

    revenue = await get("/v1/admin/finance/revenue", **month)
    assert (revenue["rentals"], revenue["revenue_fen"], revenue["refunds_fen"], revenue["net_fen"]) == (3, 700, 50, 650)
    assert (revenue["card_fen"], revenue["coupon_fen"], revenue["red_packet_fen"]) == (175, 100, 50)
    assert revenue["paid_fen"] == 700 - 175 - 100 - 50
    assert revenue["promotions_check_fen"] == 0 and revenue["red_packets_check_fen"] == 0
    assert (revenue["owed_by_users_fen"], revenue["owing_rentals"]) == (120, 1)
    assert {r["region_code"] for r in revenue["rows"]} == {nanshan, pudong}
    guangdong = await get("/v1/admin/finance/revenue", region="440000", **month)
    assert (guangdong["rentals"], guangdong["revenue_fen"], guangdong["refunds_fen"]) == (2, 550, 50)
    assert {r["region_code"] for r in guangdong["rows"]} == {nanshan}
    csv_rows = list(csv.DictReader(io.StringIO(await get("/v1/admin/finance/revenue", format="csv", **month))))
    assert sum(int(r["revenue_fen"]) for r in csv_rows) == 700 and sum(int(r["net_fen"]) for r in csv_rows) == 650

    ledger = await get("/v1/admin/finance/ledger-report", **month)
    movements = {(m["transaction_kind"], m["account_kind"]): m["net_fen"] for m in ledger["movements"]}
    assert movements[("charge", "platform_revenue")] == revenue["revenue_fen"]
    assert movements[("refund", "platform_revenue")] == -revenue["refunds_fen"]
    assert ledger["revenue_fen"] == revenue["net_fen"]  # no cards sold, no value-added services this month
    assert (ledger["provider_fees_fen"], ledger["revenue_net_of_fees_fen"]) == (42, 650 - 42)
    assert movements[("deposit", "user_deposit")] == 9900 and movements[("deposit_refund", "user_deposit")] == -9900
    assert ledger["closing_sum_fen"] == 0 and ledger["period_sum_fen"] == 0

    daily = await get("/v1/admin/finance/daily-movements", **month)
    by_day: dict[str, int] = {}
    summed: dict[tuple[str, str], int] = {}
    for row in daily["rows"]:
        by_day[row["day"]] = by_day.get(row["day"], 0) + row["net_fen"]
        key = (row["transaction_kind"], row["account_kind"])
        summed[key] = summed.get(key, 0) + row["net_fen"]
    assert set(by_day.values()) == {0} and "2026-12-01" not in by_day
    assert {k: v for k, v in summed.items() if v} == {k: v for k, v in movements.items() if v}
    ledger_csv = list(csv.DictReader(io.StringIO(await get("/v1/admin/finance/ledger-report", format="csv", **month))))
    assert sum(int(r["closing_fen"]) for r in ledger_csv) == 0
    assert (await svc.client.get("/v1/admin/finance/revenue", params=month, headers=svc.auth(alice))).status_code == 403
