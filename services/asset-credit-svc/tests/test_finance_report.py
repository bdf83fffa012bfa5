"""Integration: the finance report is the ledger summed (real PG, money moved through the real flows): its
totals add up to zero, each account kind's closing equals the accounts' balances, and a period split in two
gives the same movements."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from asset_credit_svc.charges import service as charges
from contracts.events import ChargeRequested
from kit.db import unit_of_work

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
