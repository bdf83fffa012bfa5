"""The console's pages over plain HTTP against the running mesh (no browser: cheaper, and the browser
tests in test_console.py already cover the script, the cookies and the keyboard): staff accounts and
the own-account page (forced password change, second factor at sign-in), the staff picker for task
assignment, support's view of a user. Each flow is checked against the services' own APIs."""

import asyncio
import base64
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pyotp
import pytest
import qrcode
import qrcode.constants
from mesh import Mesh, new_user
from platform_client import PlatformClient, tiny_png, wait_for

from kit.httpclient import async_client

pytestmark = pytest.mark.e2e

ADMIN = (
    os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
    os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
)
SHANGHAI = ZoneInfo("Asia/Shanghai")  # the console's zone on the test stack (CONSOLE_TIMEZONE)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browserless:
    """One staff member's cookie jar on the console: gets pages, posts forms with the page's CSRF token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def page(self, path: str, status: int = 200) -> str:
        answer = await self.http.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
        found = CSRF.search(answer.text)
        if found:
            self.csrf = found.group(1)
        return answer.text

    async def post(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf, **(form or {})})

    async def sign_in(self, login: str, password: str, totp_code: str = "") -> httpx.Response:
        await self.page("/login")
        return await self.post("/login", {"login": login, "password": password, "totp_code": totp_code})


@pytest.fixture
async def console() -> AsyncIterator[Callable[[], Browserless]]:
    url = os.environ.get("CONSOLE_URL")
    if not url:
        pytest.fail("CONSOLE_URL is not set: run through `make test` (the stack's env file sets it)")
    clients: list[httpx.AsyncClient] = []

    def make() -> Browserless:
        http = async_client(base_url=url.rstrip("/"), timeout=15.0)
        clients.append(http)
        return Browserless(http)

    yield make
    for http in clients:
        await http.aclose()


def text(html: str, figure: str) -> str:
    found = re.search(rf'data-figure="{figure}">(.*?)</', html, re.S)
    assert found, f"no {figure} on the page"
    return unescape(found.group(1)).strip()


def menu(html: str) -> list[str]:
    return re.findall(r'data-menu="(nav\.[a-z_]+)"', html)


async def test_staff_accounts_and_the_forced_password_change(mesh: Mesh, console: Callable[[], Browserless]) -> None:
    admin = console()
    assert (await admin.sign_in(*ADMIN)).headers["location"] == "/"
    assert "nav.staff" in menu(await admin.page("/staff"))
    login, first, chosen = f"fm{uuid.uuid4().hex[:6]}", "first-password-1", "chosen-password-2"
    created = await admin.post(
        "/staff", {"login": login, "password": first, "role": "field_maintenance", "must_change_password": "true"}
    )
    assert created.status_code == 303, created.text
    member_url = created.headers["location"].split("?")[0]
    page = await admin.page(member_url)
    assert text(page, "role") == "现场运维" and text(page, "status") == "正常"
    assert f'data-admin="{login}"' in await admin.page("/staff?role=field_maintenance")

    # The first sign-in can only replace the chosen password: every other page leads to the account page.
    worker = console()
    assert (await worker.sign_in(login, first)).headers["location"] == "/account"
    assert (await worker.http.get("/tasks")).headers["location"] == "/account"
    account = await worker.page("/account")
    assert menu(account) == [] and "请先修改密码" in text(account, "pending")
    mismatch = await worker.post(
        "/account/password", {"current_password": first, "new_password": chosen, "repeat_password": "other-one-3"}
    )
    assert mismatch.status_code == 422 and "两次输入的新密码不一致" in mismatch.text
    wrong = await worker.post(
        "/account/password", {"current_password": "not-it-at-all", "new_password": chosen, "repeat_password": chosen}
    )
    assert wrong.status_code == 401 and "当前密码错误" in wrong.text
    changed = await worker.post(
        "/account/password", {"current_password": first, "new_password": chosen, "repeat_password": chosen}
    )
    assert changed.headers["location"] == "/login?again=1"
    assert (await worker.http.get("/account")).headers["location"].startswith("/login")  # that session ended
    assert (await worker.sign_in(login, chosen)).headers["location"] == "/"
    assert menu(await worker.page("/tasks")) == [
        "nav.dashboard",
        "nav.map",
        "nav.cabinets",
        "nav.banks",
        "nav.alarms",
        "nav.tasks",
        "nav.tickets",
    ]
    assert (await worker.http.get("/staff")).status_code == 403  # not theirs

    # Role change and disabling end the member's console session (user-svc revokes the token).
    assert (await admin.page(member_url)) and (
        await admin.post(f"{member_url}/role", {"role": "analyst", "reason": "moved team (e2e)"})
    ).status_code == 303
    assert text(await admin.page(member_url), "role") == "分析师"

    async def signed_out() -> bool:  # device-svc hears of the revocation within about a second
        stale = await worker.http.get("/tasks")
        return stale.status_code == 303 and stale.headers["location"].startswith("/login")

    await wait_for(signed_out, timeout_s=10, interval_s=0.2)
    await admin.page(member_url)
    assert (await admin.post(f"{member_url}/disable", {"reason": "left the company (e2e)"})).status_code == 303
    assert text(await admin.page(member_url), "status") == "已停用"
    refused = await worker.sign_in(login, chosen)
    assert refused.status_code == 401 and "登录名或密码错误" in refused.text

    # A password reset shows a one-time password once; the member must replace it again.
    await admin.post(f"{member_url}/enable", {"reason": "came back (e2e)"})
    await admin.page(member_url)
    reset = await admin.post(f"{member_url}/password-reset", {"reason": "forgot it (e2e)"})
    assert reset.status_code == 200 and reset.headers["cache-control"] == "no-store"
    temporary = text(reset.text, "temporary-password")
    assert temporary not in await admin.page(member_url)  # shown on that answer only
    assert (await worker.sign_in(login, temporary)).headers["location"] == "/account"

    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    admin_id = member_url.rsplit("/", 1)[1]
    audited = await api.call("GET", f"{api.urls.user}/v1/admin/audit-log", token=token, params={"target_id": admin_id})
    assert [row["action"] for row in reversed(audited.json())] == [
        "admin.create",
        "admin.password_change",
        "admin.role_change",
        "admin.disable",
        "admin.enable",
        "admin.password_reset",
    ]


async def test_the_second_factor_is_enrolled_and_then_asked_at_sign_in(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    login, password = f"ops{uuid.uuid4().hex[:6]}", "operator-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=token,
        json={"login": login, "password": password, "role": "operator", "must_change_password": False},
    )
    assert created.status == 201, created.response.text

    member = console()
    assert (await member.sign_in(login, password)).headers["location"] == "/"
    await member.page("/account")
    begun = await member.post("/account/totp")
    assert begun.status_code == 200, begun.text
    secret = text(begun.text, "totp-secret").replace(" ", "")
    assert_qr_code_of(begun.text, secret)
    wrong = await member.post(
        "/account/totp/confirm", {"code": "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"}
    )
    assert wrong.status_code == 422 and "验证码不正确" in wrong.text
    step = int(time.time() // 30)
    confirmed = await member.post("/account/totp/confirm", {"code": pyotp.TOTP(secret).at(step * 30)})
    assert confirmed.headers["location"] == "/login?again=1"

    asked = await member.sign_in(login, password)
    assert asked.status_code == 401 and "该账号需要动态验证码" in asked.text
    assert f'value="{login}"' in asked.text  # the login is kept for the second try
    # a code is accepted once: the next step's (within the one-step window)
    signed_in = await member.sign_in(login, password, pyotp.TOTP(secret).at((step + 1) * 30))
    assert signed_in.headers["location"] == "/"
    me = await member.page("/account")
    assert text(me, "totp").startswith("是")


def assert_qr_code_of(html: str, secret: str) -> None:
    """The enrolment shows a QR code (an SVG data image with a text alternative) whose dark modules are
    exactly those of the otpauth link shown beside it, and that link carries the key."""
    image = re.search(r'<img class="qr" id="totp-qr" src="data:image/svg\+xml;base64,([^"]+)"[^>]* alt="([^"]+)"', html)
    assert image, "no QR code on the enrolment page"
    assert image.group(2) == "验证器应用扫描的二维码"
    uri = unescape(re.search(r'<code class="wrap">(otpauth://[^<]+)</code>', html).group(1))  # type: ignore[union-attr]
    assert f"secret={secret}" in uri
    drawn = {
        (int(x), int(y)) for x, y in re.findall(r"M(\d+) (\d+)h1v1h-1z", base64.b64decode(image.group(1)).decode())
    }
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(uri)
    code.make(fit=True)
    expected = {(x, y) for y, row in enumerate(code.get_matrix()) for x, dark in enumerate(row) if dark}
    assert drawn == expected


async def test_a_dispatcher_picks_the_assignee_from_the_staff(mesh: Mesh, console: Callable[[], Browserless]) -> None:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    login = f"tech{uuid.uuid4().hex[:6]}"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=token,
        json={
            "login": login,
            "password": "technician-password-1",
            "role": "field_maintenance",
            "must_change_password": False,
        },
    )
    assert created.status == 201, created.response.text
    technician_id = created.json()["admin_id"]
    bank_id = f"PB-PCK{uuid.uuid4().hex[:6].upper()}"
    assert (
        await api.call("POST", f"{api.urls.device}/v1/admin/banks", token=token, json={"id": bank_id})
    ).status == 201
    faulty = await api.call(
        "POST",
        f"{api.urls.device}/v1/ops/banks/{bank_id}/state",
        token=token,
        json={"state": "faulty", "reason": "swollen cell (e2e)"},
    )
    assert faulty.status == 200, faulty.response.text
    assert (await api.call("POST", f"{api.urls.device}/v1/ops/tasks/scan", token=token)).status == 200
    [task] = (
        await api.call("GET", f"{api.urls.device}/v1/ops/tasks", token=token, params={"device_id": bank_id})
    ).json()["items"]

    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/tasks/{task['id']}")
    picker = re.search(r'<select id="task-assignee" name="assignee">(.*?)</select>', page, re.S)
    assert picker and f'value="{technician_id}"' in picker.group(1)
    assigned = await admin.post(f"/tasks/{task['id']}/assign", {"assignee": technician_id, "note": "yours"})
    assert assigned.status_code == 303, assigned.text
    assert text(await admin.page(f"/tasks/{task['id']}"), "task-assignee") == login
    detail = (await api.call("GET", f"{api.urls.device}/v1/ops/tasks/{task['id']}", token=token)).json()
    assert detail["assignee"] == technician_id and detail["status"] == "assigned"


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


async def settled_rental(mesh: Mesh, user: PlatformClient) -> dict[str, Any]:
    """A rental borrowed from one emulated cabinet, returned to another, and paid."""
    cabinets = [c for c in await user.cabinets() if c["online"]]
    source = max(cabinets, key=lambda c: c["banks_available"])
    borrowed = await user.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
    target = max((c for c in cabinets if c["id"] != source["id"]), key=lambda c: c["free_slots"])
    await mesh.fleet[target["id"]].return_bank(rental["bank_id"])

    async def settled() -> dict[str, Any] | None:
        now = await user.rental(rental["rental_id"])
        return now if now["state"] == "settled" else None

    found, _ = await wait_for(settled, timeout_s=30, interval_s=0.2)
    return found


async def staff_member(mesh: Mesh, role: str) -> tuple[str, str]:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    login, password = f"{role[:4]}{uuid.uuid4().hex[:6]}", f"{role}-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=token,
        json={"login": login, "password": password, "role": role, "must_change_password": False},
    )
    assert created.status == 201, created.response.text
    return login, password


async def test_support_sees_a_users_rentals_credit_and_tickets_but_not_the_ledger(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    me = (await user.call("GET", f"{user.urls.user}/v1/users/me")).json()
    rental = await settled_rental(mesh, user)
    reported = await user.report("app_problem", "the map shows no cabinets near me")
    assert reported.status == 201, reported.response.text

    agent = console()
    assert (await agent.sign_in(*await staff_member(mesh, "support"))).headers["location"] == "/"
    page = await agent.page(f"/users/{me['user_id']}")
    row = re.search(rf'<tr data-rental="{rental["rental_id"]}">(.*?)</tr>', page, re.S)
    assert row and yuan(rental["fee_fen"]) in row.group(1) and rental["cabinet_id"] in row.group(1)
    assert f'href="/tickets/{reported.json()["ticket_id"]}"' in page
    assert 'data-section="credit"' in page
    assert 'data-section="wallet"' not in page  # ledger:read is finance's, and asset-credit would refuse it

    async def inbox_shown() -> list[dict[str, Any]] | None:
        """The user's inbox as the user reads it (the rental's end at least), all on support's page."""
        inbox = await user.messages()
        shown = await agent.page(f"/users/{me['user_id']}")
        return inbox if inbox and all(f'data-message="{m["message_id"]}"' in shown for m in inbox) else None

    inbox, _ = await wait_for(inbox_shown, timeout_s=15, interval_s=0.3)
    assert any("PB-" in m["body"] or "¥" in m["body"] for m in inbox)  # the rental's message is there
    assert me["phone"] not in page and text(page, "phone").count("*") >= 4  # masked by user-svc

    revealed = await agent.page(f"/users/{me['user_id']}?reveal=true")
    assert text(revealed, "phone") == me["phone"]
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    trail = await api.call(
        "GET", f"{api.urls.user}/v1/admin/audit-log", token=token, params={"target_id": me["user_id"]}
    )
    assert "user.pii_reveal" in [row["action"] for row in trail.json()]

    # An administrator with ledger:read also sees the wallet, as asset-credit reports it.
    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/users/{me['user_id']}")
    wallet = await user.wallet()
    assert text(page, "balance") == yuan(wallet["balance_fen"])
    assert '<tr data-movement="top_up">' in page


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
    assert not_money.status_code == 422 and "price_per_period" in not_money.text
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


async def test_a_dispute_is_resolved_by_a_confirmed_correction_that_refunds_once(
    mesh: Mesh, user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    rental = await settled_rental(mesh, user)
    assert rental["fee_fen"] > 50, rental
    disputed = await user.call(
        "POST", f"{user.urls.billing}/v1/rentals/{rental['rental_id']}/disputes", json={"reason": "returned at once"}
    )
    assert disputed.status == 201, disputed.response.text
    balance_before = (await user.wallet())["balance_fen"]

    agent = console()
    await agent.sign_in(*await staff_member(mesh, "support"))
    queue = await agent.page("/disputes")
    assert f'data-dispute="{disputed.json()["dispute_id"]}"' in queue
    page = await agent.page(f"/rentals/{rental['rental_id']}")
    assert 'data-section="dispute"' in page and "returned at once" in page
    dispute_id = re.search(r'name="dispute_id" value="([^"]+)"', page)
    assert dispute_id and dispute_id.group(1) == disputed.json()["dispute_id"]

    form = {"fee": "0.5", "note": "cabinet log: returned within a minute (e2e)", "dispute_id": dispute_id.group(1)}
    review = await agent.post(f"/rentals/{rental['rental_id']}/correction", form)
    assert review.status_code == 200, review.text
    assert text(review.text, "fee-change") == f"{yuan(rental['fee_fen'])} → ¥0.50"
    assert text(review.text, "refund") == yuan(rental["paid_fen"] - 50)
    assert (await user.rental(rental["rental_id"]))["fee_fen"] == rental["fee_fen"]  # nothing sent before confirming

    key = re.search(r'name="correction_key" value="([^"]+)"', review.text)
    assert key
    for _ in range(2):  # a confirmation sent twice corrects once
        confirmed = await agent.post(
            f"/rentals/{rental['rental_id']}/correction/confirm", {**form, "correction_key": key.group(1)}
        )
        assert confirmed.status_code == 303, confirmed.text
    page = await agent.page(f"/rentals/{rental['rental_id']}")
    assert text(page, "fee") == "¥0.50" and page.count("data-correction=") == 1
    assert 'data-section="dispute"' not in page  # resolved by the correction
    assert f'data-dispute="{dispute_id.group(1)}"' in await agent.page("/disputes?state=resolved")

    async def refunded() -> bool:
        return bool((await user.wallet())["balance_fen"] == balance_before + rental["paid_fen"] - 50)

    await wait_for(refunded, timeout_s=15, interval_s=0.2)


async def test_a_notice_with_an_image_is_published_to_the_inbox(
    user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    admin = console()
    await admin.sign_in(*ADMIN)
    assert {"nav.notices", "nav.campaigns"} <= set(menu(await admin.page("/notices")))
    title = f"Console notice {uuid.uuid4().hex[:6]}"
    created = await admin.post("/notices", {"kind": "operations", "title": title, "text": "New <b>cabinets</b>."})
    assert created.status_code == 303, created.text
    notice_url = created.headers["location"].split("?")[0]
    assert text(await admin.page(notice_url), "notice-state") == "草稿"

    def upload(data: bytes, name: str) -> Any:
        return admin.http.post(f"{notice_url}/images", data={"csrf": admin.csrf}, files={"image": (name, data)})

    fake = await upload(b"<svg onload=alert(1)>", "fake.png")
    assert fake.status_code == 415 and "not_an_image" in fake.text  # notify-svc checks the content
    assert (await admin.http.post(f"{notice_url}/images", files={"image": ("a.png", tiny_png())})).status_code == 403
    added = await upload(tiny_png(), "cabinets.png")
    assert added.status_code == 303, added.text
    page = await admin.page(notice_url)
    assert re.findall(r'<li data-image="[0-9a-f-]{36}">([^<]+)</li>', page) == ["image/png"]  # the fake is not kept
    assert "New &lt;b&gt;cabinets&lt;/b&gt;." in page  # staff text is escaped

    published = await admin.post(f"{notice_url}/publish")
    assert published.status_code == 303, published.text
    assert text(await admin.page(notice_url), "notice-state").startswith("已发布")

    async def in_inbox() -> dict[str, Any] | None:
        return next((m for m in await user.messages() if m["title"] == title), None)

    message, _ = await wait_for(in_inbox, timeout_s=15, interval_s=0.2)
    assert message["body"] == "New <b>cabinets</b>."
    assert [i["content_type"] for i in message["images"]] == ["image/png"]


async def test_a_campaign_is_counted_scheduled_and_followed_to_the_inbox(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    since = datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(seconds=1)
    user = await new_user(mesh, balance_fen=0)
    consent = await user.call(
        "PUT", f"{user.urls.notify}/v1/preferences", json={"marketing": {"inbox": True, "push": False, "sms": False}}
    )
    assert consent.status == 200, consent.response.text
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    segment = {"registered_after": since.isoformat()}

    async def counted() -> dict[str, Any] | None:
        found = await api.call(
            "POST", f"{api.urls.notify}/v1/admin/campaigns/preview", token=token, json={"segment": segment}
        )
        body: dict[str, Any] = found.json()
        return body if body["reachable"]["inbox"] >= 1 else None

    expected, _ = await wait_for(counted, timeout_s=15, interval_s=0.2)  # notify-svc learns of users by events

    operator = console()
    await operator.sign_in(*await staff_member(mesh, "operator"))
    await operator.page("/campaigns")
    title = f"Console offer {uuid.uuid4().hex[:6]}"
    form = {
        "title": title,
        "text": "Half price today.",
        "channel_inbox": "1",
        "audience": "rules",
        "registered_after": since.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    counted_page = await operator.post("/campaigns", {**form, "action": "preview"})
    assert counted_page.status_code == 200, counted_page.text
    assert int(text(counted_page.text, "audience")) == expected["audience"]
    assert int(text(counted_page.text, "reach-inbox")) == expected["reachable"]["inbox"]
    assert f'value="{title}"' in counted_page.text  # the form comes back as typed

    saved = await operator.post("/campaigns", {**form, "action": "create"})
    assert saved.status_code == 303, saved.text
    campaign_url = saved.headers["location"].split("?")[0]
    page = await operator.page(campaign_url)
    assert text(page, "campaign-status") == "草稿"
    assert text(page, "segment").startswith("注册晚于: " + since.strftime("%Y-%m-%d %H:%M"))

    scheduled = await operator.post(f"{campaign_url}/schedule", {"send_at": ""})
    assert scheduled.status_code == 303, scheduled.text

    async def sent() -> str | None:
        now = await operator.page(campaign_url)
        return now if text(now, "campaign-status") == "已发送" else None

    done, _ = await wait_for(sent, timeout_s=30, interval_s=0.3)
    campaign_id = campaign_url.rsplit("/", 1)[1]
    stats = (await api.call("GET", f"{api.urls.notify}/v1/admin/campaigns/{campaign_id}", token=token)).json()["stats"]
    assert int(text(done, "stat-recipients")) == stats["recipients"] >= 1
    assert int(text(done, "stat-inbox_delivered")) == stats["inbox_delivered"] >= 1
    assert title in [m["title"] for m in await user.messages()]
    assert f'data-campaign="{campaign_id}"' in await operator.page("/campaigns")


async def test_the_console_refreshes_the_staff_token_silently_until_the_session_is_revoked(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    """The test stack's console refreshes a token with less than 895 s of its 900 left (about every 5 s)."""
    api = mesh.client()
    root = await api.admin_login(*ADMIN)
    login, password = f"oper{uuid.uuid4().hex[:6]}", "operator-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=root,
        json={"login": login, "password": password, "role": "operator", "must_change_password": False},
    )
    assert created.status == 201, created.response.text
    sessions_url = f"{api.urls.user}/v1/admin/admins/{created.json()['admin_id']}/sessions"

    async def sessions() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await api.call("GET", sessions_url, token=root)).json()
        return found

    member = console()
    assert (await member.sign_in(login, password)).headers["location"] == "/"
    [signed_in] = await sessions()

    async def refreshed() -> dict[str, Any] | None:
        page = await member.http.get("/tasks")
        assert page.status_code == 200, (page.status_code, page.headers.get("location"))  # never signed out
        [now] = await sessions()
        return now if now["expires_at"] > signed_in["expires_at"] else None

    after, _ = await wait_for(refreshed, timeout_s=30, interval_s=0.5)
    assert after["session_id"] == signed_in["session_id"]  # the same session, its tokens renewed

    revoked = await api.call("DELETE", f"{sessions_url}/{signed_in['session_id']}", token=root)
    assert revoked.status == 204, revoked.response.text

    async def signed_out() -> str | None:
        page = await member.http.get("/tasks")
        return page.headers.get("location") if page.status_code == 303 else None

    location, _ = await wait_for(signed_out, timeout_s=15, interval_s=0.5)
    assert location == "/login?expired=1"
    assert (await member.http.get("/tasks")).headers["location"].startswith("/login")  # the session is gone


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


async def test_a_bank_ejected_for_maintenance_leaves_the_emulated_cabinet_audited(
    mesh: Mesh, console: Callable[[], Browserless]
) -> None:
    api = mesh.client()
    token = await api.admin_login(*ADMIN)
    cabinet_id = sorted(mesh.fleet.cabinets)[-1]
    cabinet = (await api.call("GET", f"{api.urls.device}/v1/cabinets/{cabinet_id}", token=token)).json()
    bank_id = next(s["bank_id"] for s in reversed(cabinet["slots"]) if s["bank_id"] and s["rentable"])
    emulated = mesh.fleet[cabinet_id]
    slot = emulated.slot_of(bank_id)

    admin = console()
    await admin.sign_in(*ADMIN)
    page = await admin.page(f"/banks/{bank_id}")
    assert 'data-action="eject"' in page and 'for="eject-reason"' in page
    sent = await admin.post(f"/banks/{bank_id}/eject", {"reason": "cracked case <b>"})
    assert (sent.status_code, sent.headers["location"]) == (303, f"/banks/{bank_id}?done=bank.eject_sent")

    async def out_of_the_cabinet() -> bool:
        return emulated.slot_of(bank_id) is None

    await wait_for(out_of_the_cabinet, timeout_s=10)
    try:

        async def held() -> str | None:
            page = await admin.page(f"/banks/{bank_id}")
            return page if text(page, "state") == "maintenance" else None

        page, _ = await wait_for(held, timeout_s=10, interval_s=0.2)
        assert "cracked case &lt;b&gt;" in page  # the reason in its transitions, escaped

        async def audited() -> str | None:
            page = await admin.page(f"/audit?action=bank.eject_for_maintenance&target_id={bank_id}")
            return page if f"<td>bank {bank_id}</td>" in page else None

        page, _ = await wait_for(audited, timeout_s=15, interval_s=0.3)
        assert "cracked case &lt;b&gt;" in page
        assert (await admin.post(f"/banks/{bank_id}/eject", {"reason": "again"})).status_code == 409
    finally:  # back in its slot and in service, for the other tests
        await emulated.wait_ack(await emulated.return_bank(bank_id, slot=slot), timeout_s=5)
        back = await api.call(
            "POST",
            f"{api.urls.device}/v1/ops/banks/{bank_id}/state",
            token=token,
            json={"state": "in_cabinet", "reason": "serviced"},
        )
        assert back.status == 200, back.response.text


def local_minute(at: datetime) -> str:
    """A datetime-local field's value in the console's zone."""
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


async def test_ads_and_value_added_services_are_run_from_the_console(
    user: PlatformClient, console: Callable[[], Browserless]
) -> None:
    admin = console()
    await admin.sign_in(*ADMIN)
    assert {"nav.ads", "nav.vas", "nav.reconciliation"} <= set(menu(await admin.page("/ads")))
    title = f"Console banner {uuid.uuid4().hex[:6]}"
    now = datetime.now(SHANGHAI)
    created = await admin.post(
        "/ads",
        {
            "slot": "app_banner",
            "advertiser": "Tea <House>",
            "title": title,
            "text": "Half price today",
            "link_url": "https://example.com/tea",
            "display_s": "15",
            "regions": "",
            "starts_at": local_minute(now - timedelta(minutes=1)),
            "ends_at": local_minute(now + timedelta(days=1)),
        },
    )
    assert created.status_code == 303, created.text
    ad_id = created.headers["location"].split("#ad-")[1]
    banners = (await user.call("GET", f"{user.urls.notify}/v1/ads")).json()["items"]
    assert [b["label"] for b in banners if b["ad_id"] == ad_id] == ["advertisement"]
    assert (await user.call("POST", f"{user.urls.notify}/v1/ads/{ad_id}/impressions")).json()["counted"]
    row = re.search(rf'<tr id="ad-{ad_id}".*?</tr>', await admin.page("/ads"), re.S)
    assert row and text(row.group(0), "impressions") == "1" and "Tea &lt;House&gt;" in row.group(0)
    assert (await admin.post(f"/ads/{ad_id}/withdraw")).status_code == 303
    banners = (await user.call("GET", f"{user.urls.notify}/v1/ads")).json()["items"]
    assert all(b["ad_id"] != ad_id for b in banners)

    code = f"cover_{uuid.uuid4().hex[:8]}"
    form = {"code": code, "name": "Cable cover", "kind": "add_on", "provider": "PICC", "price": "0.50"}
    made = await admin.post("/vas", form | {"description": "A new cable if yours breaks"})
    assert (made.status_code, made.headers["location"]) == (303, f"/vas/{code}?done=vas.created")
    page = await admin.page(f"/vas/{code}")
    assert text(page, "price") == "¥0.50" and text(page, "vas-state") == "未上架"
    assert (await admin.post(f"/vas/{code}/risk-notices", {"text": "Cover ends <b>after 24 h</b>."})).status_code == 303
    page = await admin.page(f"/vas/{code}")
    assert text(page, "notice-version").startswith("v1") and "Cover ends &lt;b&gt;after 24 h&lt;/b&gt;." in page
    consent = await user.call(
        "POST", f"{user.urls.notify}/v1/value-added-services/{code}/consents", json={"version": 1}
    )
    assert consent.status == 201, consent.response.text
    me = (await user.call("GET", f"{user.urls.user}/v1/users/me")).json()["user_id"]
    assert f'data-consent="{me}"' in await admin.page(f"/vas/{code}")

    # Finance (here the super administrator) refunds the paid fee from the user's view, once.
    async def paid_row() -> str | None:
        page = await admin.page(f"/users/{me}")
        found = re.search(r'data-vas-charge="(\d+)"', page)
        return found.group(1) if found and text(page, f"vas-status-{found.group(1)}") == "已支付" else None

    consent_id, _ = await wait_for(paid_row, timeout_s=20, interval_s=0.3)
    balance = (await user.wallet())["balance_fen"]
    form = {"user_id": me, "reason": "cover <not> delivered"}
    refunded = await admin.post(f"/vas-charges/{consent_id}/refund", form)
    assert (refunded.status_code, refunded.headers["location"]) == (303, f"/users/{me}?done=vas.refunded#vas")
    page = await admin.page(f"/users/{me}")
    assert text(page, f"vas-status-{consent_id}") == "已退款: cover <not> delivered"  # the reason, on the row
    assert (await user.wallet())["balance_fen"] == balance + 50
    assert (await admin.post(f"/vas-charges/{consent_id}/refund", form)).status_code == 409

    async def told() -> bool:
        return any(m["title"] == "Refund received" for m in await user.messages())

    await wait_for(told, timeout_s=15, interval_s=0.3)
    assert (await admin.post(f"/vas/{code}/retire")).status_code == 303
    assert text(await admin.page(f"/vas/{code}"), "vas-state").startswith("已下架")


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
    refused = await finance.post(f"/reconciliation/alipay/statements/{today}")
    assert "unsupported_channel" in refused.text  # the sandbox has no daily statements
    operator = console()
    await operator.sign_in(*await staff_member(mesh, "operator"))
    await operator.page("/reconciliation", status=403)
