"""The console's money pages over plain HTTP: pricing plans, red packets, the ledger report and
reconciliation; checked against billing-svc's and asset-credit's APIs."""

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from html import unescape
from typing import Any

import pytest
from console_http import (
    ADMIN,
    SHANGHAI,
    Browserless,
    menu,
    settled_rental,
    staff_member,
    text,
    yuan,
)
from mesh import Mesh
from platform_client import PlatformClient

pytestmark = pytest.mark.e2e


async def test_a_pricing_plan_is_created_changed_and_retired_in_yuan(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    finance = console()
    await finance.sign_in(*await staff_member(mesh, "finance"))
    page = await finance.page("/pricing")
    assert "nav.pricing" in menu(page) and "nav.staff" not in menu(page)
    cabinet = f"CAB-CONSOLE-{uuid.uuid4().hex[:6]}"  # no such cabinet: the fleet's prices stay as they are
    created = await finance.post(
        "/pricing",
        {
            "scope": "cabinet",
            "scope_value": cabinet,
            "name": "console plan",
            "period_minutes": "60",
            "price_per_period": "2.5",
            "free_minutes": "5",
            "daily_cap": "¥20",
            "purchase_ceiling": "79.90",
        },
    )
    assert created.status_code == 303, created.text
    plan_url = created.headers["location"].split("?")[0]
    plan_id = plan_url.rsplit("/", 1)[1]
    api = mesh.client()
    token = await api.admin_login(*ADMIN)

    async def plan() -> dict[str, Any]:
        listed = await api.call(
            "GET", f"{api.urls.billing}/v1/admin/pricing-plans", token=token, params={"include_inactive": "true"}
        )
        found: dict[str, Any] = next(p for p in listed.json()["items"] if p["plan_id"] == plan_id)
        return found

    stored = await plan()
    assert (stored["scope_value"], stored["price_per_period_fen"], stored["daily_cap_fen"]) == (cabinet, 250, 2000)
    assert stored["purchase_ceiling_fen"] == 7990 and stored["free_minutes"] == 5
    assert text(await finance.page(plan_url), "price") == "¥2.50 / 60 分钟"

    not_money = await finance.post(
        plan_url,
        {
            **{k: "1" for k in ("period_minutes", "free_minutes")},
            "name": "x",
            "price_per_period": "1.005",
            "daily_cap": "1",
            "purchase_ceiling": "1",
        },
    )
    assert (not_money.status_code, not_money.headers["location"]) == (303, plan_url)
    shown = await finance.page(plan_url)
    assert text(shown, "problem") == "表单内容无法识别 (form_invalid)" and "price_per_period" in shown
    refill = re.search(r'<div id="refill" hidden data-refill="([^"]+)">', shown)
    assert refill, "what was typed is not sent back"
    assert json.loads(unescape(refill.group(1))) == {
        "action": plan_url,
        "fields": {
            "period_minutes": "1",
            "free_minutes": "1",
            "name": "x",
            "price_per_period": "1.005",
            "daily_cap": "1",
            "purchase_ceiling": "1",
        },
    }
    changed = await finance.post(
        plan_url,
        {
            "name": "console plan",
            "period_minutes": "30",
            "price_per_period": "3",
            "free_minutes": "0",
            "daily_cap": "30.00",
            "purchase_ceiling": "79.90",
        },
    )
    assert changed.status_code == 303, changed.text
    assert ((await plan())["price_per_period_fen"], (await plan())["period_minutes"]) == (300, 30)
    await finance.page(plan_url)
    assert (await finance.post(f"{plan_url}/active", {"active": "false"})).status_code == 303
    assert (await plan())["active"] is False
    assert text(await finance.page(plan_url), "plan-status") == "已停用"


async def test_a_red_packet_is_issued_once_from_a_form_sent_twice(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    me = (await user.call("GET", f"{user.urls.user}/v1/users/me")).json()
    operator = console()
    await operator.sign_in(*await staff_member(mesh, "operator"))
    assert "nav.coupons" in menu(await operator.page("/coupons"))
    created = await operator.post(
        "/coupons", {"kind": "red_packet", "name": "console red packet", "valid_days": "7", "amount": "5.5"}
    )
    assert created.status_code == 303, created.text
    template_url = created.headers["location"].split("?")[0]
    page = await operator.page(template_url)
    assert text(page, "terms") == "¥5.50"
    issue_key = re.search(r'name="issue_key" value="([^"]+)"', page)
    assert issue_key
    form = {"user_ids": f"{me['user_id']}\n", "issue_key": issue_key.group(1)}
    for _ in range(2):  # the same form sent twice (a double click, a resend after a timeout)
        sent = await operator.post(f"{template_url}/issue", form)
        assert sent.status_code == 303, sent.text
    assert (await operator.page(template_url)).count(f'data-asset="{me["user_id"]}"') == 1
    mine = await user.call("GET", f"{user.urls.asset}/v1/assets")
    packets = [a for a in mine.json()["items"] if a["name"] == "console red packet"]
    assert [(a["kind"], a["amount_fen"]) for a in packets] == [("red_packet", 550)]

    assert (await operator.post(f"{template_url}/deactivate")).status_code == 303
    assert text(await operator.page(template_url), "template-status") == "已停用"


async def test_finance_sees_the_ledger_report_of_a_period_as_asset_credit_computes_it(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    await settled_rental(mesh, user)  # a top-up and a fee in today's ledger
    today = datetime.now(SHANGHAI).date()
    start = datetime(today.year, today.month, today.day, tzinfo=SHANGHAI)
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    report = (
        await api.call(
            "GET",
            f"{api.urls.asset}/v1/admin/finance/ledger-report",
            token=token,
            params={"since": start.isoformat(), "until": (start + timedelta(days=1)).isoformat()},
        )
    ).json()
    assert report["revenue_fen"] > 0

    finance = console()
    await finance.sign_in(*await staff_member(mesh, "finance"))
    page = await finance.page(f"/finance?since={today.isoformat()}&until={today.isoformat()}")
    assert "nav.finance" in menu(page)
    assert text(page, "revenue") == yuan(report["revenue_fen"])
    assert text(page, "owed") == yuan(report["owed_to_users_fen"])
    assert text(page, "deposits") == yuan(report["deposits_held_fen"])
    assert text(page, "checks").endswith("平衡") and "不平衡" not in text(page, "checks")
    assert {a["account_kind"] for a in report["accounts"]} == set(re.findall(r'<tr data-account="([^"]+)">', page))

    operator = console()
    await operator.sign_in(*await staff_member(mesh, "operator"))
    assert "nav.finance" not in menu(await operator.page("/"))
    await operator.page("/finance", status=403)


async def test_finance_reconciles_a_channel_as_asset_credit_does(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    today = datetime.now(SHANGHAI).date()
    start = datetime(today.year, today.month, today.day, tzinfo=SHANGHAI)
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    report = (
        await api.call(
            "GET",
            f"{api.urls.asset}/v1/admin/reconciliation/alipay",
            token=token,
            params={"since": start.isoformat(), "until": (start + timedelta(days=1)).isoformat()},
        )
    ).json()
    assert report["checked"] >= 1  # this user's top-up at least

    finance = console()
    await finance.sign_in(*await staff_member(mesh, "finance"))
    page = await finance.page(f"/reconciliation?channel=alipay&since={today}&until={today}&bill_date={today}")
    assert "nav.reconciliation" in menu(page)
    assert int(text(page, "checked")) >= report["checked"]
    assert text(page, "order-mismatches") == str(len(report["mismatches"]))
    assert text(page, "statement-state").endswith("(statement_not_reconciled)")
    back = f"/reconciliation?channel=alipay&bill_date={today}"
    assert f'name="back" value="{back.replace("&", "&amp;")}"' in page  # the form says where it was
    refused = await finance.post(f"/reconciliation/alipay/statements/{today}", {"back": back})
    assert (refused.status_code, refused.headers["location"]) == (303, back)
    # The sandbox has no daily statements: asset-credit's refusal, on the page the button was on.
    assert text(await finance.page(back), "problem") == "该支付渠道不支持此操作 (unsupported_channel)"
    operator = console()
    await operator.sign_in(*await staff_member(mesh, "operator"))
    await operator.page("/reconciliation", status=403)
