"""The operations console in a real browser (Debian's Chromium driven by Playwright) against the running
mesh: sign-in and its safety (HttpOnly session cookie, CSP, CSRF), the dashboard's figures against the
APIs, the map, ringing a bank, answering a ticket, blocking a user, a role's menu, keyboard use and
labels. Screenshots of each main page go to reports/console/."""

import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from console_http import SHANGHAI
from mesh import ROOT, Mesh, new_user
from platform_client import PlatformClient, wait_for
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from device_emulator.bank import BankModule
from device_emulator.tls import context_from_env

CHROMIUM = os.environ.get("PB_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "reports" / "console"
ADMIN = (
    os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
    os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
)
MAIN_PAGES = (
    "/",
    "/map",
    "/cabinets",
    "/banks",
    "/alarms",
    "/tasks",
    "/tickets",
    "/users",
    "/disputes",
    "/pricing",
    "/coupons",
    "/finance",
    "/reconciliation",
    "/notices",
    "/campaigns",
    "/ads",
    "/vas",
    "/staff",
    "/audit",
    "/account",
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def console_url() -> str:
    url = os.environ.get("CONSOLE_URL")
    if not url:
        pytest.fail("CONSOLE_URL is not set: run through `make test` (the stack's env file sets it)")
    return url.rstrip("/")


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(mesh: Mesh, chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    yield ctx
    await ctx.close()


@pytest.fixture
async def admin_token(mesh: Mesh) -> str:
    return await mesh.client().admin_login(*ADMIN)


async def sign_in(page: Page, console_url: str, login: str, password: str) -> None:
    await page.goto(f"{console_url}/login")
    await page.get_by_label("登录名").fill(login)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await expect(page.locator("h1")).to_have_text("运营总览")


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_sign_in_is_safe_by_construction(context: BrowserContext, console_url: str) -> None:
    page = await context.new_page()
    answer = await page.goto(f"{console_url}/")
    assert answer is not None
    assert page.url == f"{console_url}/login"
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    await shot(page, "sign-in")

    await page.get_by_label("登录名").fill(ADMIN[0])
    await page.get_by_label("密码").fill("not-the-password")
    await page.get_by_role("button", name="登录").click()
    await expect(page.get_by_role("alert")).to_have_text("登录名或密码错误")

    await sign_in(page, console_url, *ADMIN)
    cookie = next(c for c in await context.cookies() if c["name"] == "pb_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "pb_console" not in await page.evaluate("document.cookie")  # script cannot read the session
    assert await page.evaluate("Object.keys(window.localStorage).length") == 0
    assert await page.evaluate("Object.keys(window.sessionStorage).length") == 0
    assert "token" not in page.url

    # A state change without the session's CSRF token is refused, even with the session cookie.
    refused = await context.request.post(
        f"{console_url}/users/{uuid.uuid4()}/block", form={"reason": "forged"}, max_redirects=0
    )
    assert refused.status == 403
    # ... and so is one that says it comes from another origin, token or not.
    csrf = await page.locator("form[action='/logout'] input[name=csrf]").get_attribute("value")
    cross = await context.request.post(
        f"{console_url}/lang", form={"csrf": csrf or "", "back": "/"}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status == 403

    await page.get_by_role("button", name="退出登录").click()
    await expect(page.get_by_role("status")).to_have_text("已退出登录")
    await page.goto(f"{console_url}/users")
    assert page.url.startswith(f"{console_url}/login")  # the old cookie names no session any more


async def test_dashboard_figures_match_the_apis(
    context: BrowserContext, console_url: str, mesh: Mesh, admin_token: str
) -> None:
    page = await context.new_page()
    await sign_in(page, console_url, *ADMIN)
    api = mesh.client()

    async def get(url: str, **params: Any) -> Any:
        answer = await api.call("GET", url, token=admin_token, params=params)
        assert answer.status == 200, answer.response.text
        return answer.json()

    async def expected() -> dict[str, str]:
        local = datetime.now(SHANGHAI)  # the console's zone on the test stack: "today" starts at its midnight
        midnight = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
        overview = await get(f"{api.urls.analytics}/v1/stats/overview", since=midnight.isoformat())
        presence = await get(f"{api.urls.device}/v1/ops/presence")
        alarms = await get(f"{api.urls.device}/v1/ops/alarms", limit=1000)
        tickets = await api.call(
            "GET",
            f"{api.urls.notify}/v1/admin/tickets",
            token=admin_token,
            params=[("status", s) for s in ("new", "assigned", "waiting_user", "reopened")] + [("limit", 100)],
        )
        revenue, today = overview["revenue_fen"], overview["revenue_since_fen"]
        share = round(100 * presence["online"] / presence["cabinets"])
        return {
            "rentals_now": str(overview["active_rentals"]),
            "rentals_today": str(overview["rentals_started_since"]),
            "revenue_today": f"¥{today // 100:,}.{today % 100:02d}",
            "revenue": f"¥{revenue // 100:,}.{revenue % 100:02d}",
            "cabinets_online": f"{share}% ({presence['online']}/{presence['cabinets']})",
            "open_alarms": str(len(alarms["items"])),
            "open_tickets": str(len(tickets.json()["items"])),
        }

    async def shown() -> dict[str, str]:
        return {
            key: await page.locator(f"[data-figure={key}]").inner_text()
            for key in (
                "rentals_now",
                "rentals_today",
                "revenue_today",
                "revenue",
                "cabinets_online",
                "open_alarms",
                "open_tickets",
            )
        }

    # Events from earlier tests may still be reaching analytics-svc: equal once the figures stand still.
    async def same() -> tuple[dict[str, str], dict[str, str]] | None:
        await page.reload()
        on_page, from_apis = await shown(), await expected()
        return (on_page, from_apis) if on_page == from_apis else None

    try:
        await wait_for(same, timeout_s=15, interval_s=0.5)
    except TimeoutError:
        assert await shown() == await expected()
    per_hour = await get(f"{api.urls.analytics}/v1/stats/rentals-per-hour", days=1)
    bars = page.locator("svg[data-chart=per-hour] rect.bar")
    assert [int(v or 0) for v in await bars.evaluate_all("bs => bs.map(b => b.dataset.value)")] == [
        b["rentals"] for b in per_hour["buckets"]
    ]
    await expect(page.locator("svg[data-chart=active-users]")).to_be_visible()
    await shot(page, "dashboard")

    # Live: a new ticket reaches the open page over server-sent events, without a reload.
    await expect(page.locator("#live")).to_have_attribute("data-stream", "open")
    before = int(await page.locator("[data-figure=open_tickets]").inner_text())
    reporter = await new_user(mesh, balance_fen=0)
    reported = await reporter.report("app_problem", "the dashboard should see this ticket")
    assert reported.status == 201, reported.response.text
    await expect(page.locator("[data-figure=open_tickets]")).to_have_text(str(before + 1), timeout=15_000)


async def test_find_a_cabinet_on_the_map(context: BrowserContext, console_url: str, mesh: Mesh) -> None:
    target = sorted(mesh.fleet.cabinets)[1]
    page = await context.new_page()
    await sign_in(page, console_url, *ADMIN)
    await page.get_by_role("link", name="地图").click()
    svg = page.locator("svg#map")
    await expect(svg.locator("a[data-cabinet]")).to_have_count(len(mesh.fleet.cabinets))
    home = await svg.get_attribute("viewBox")
    await svg.focus()
    await page.keyboard.press("+")  # keyboard zoom
    await page.keyboard.press("ArrowRight")  # keyboard pan
    assert await svg.get_attribute("viewBox") != home
    await shot(page, "map")

    await page.get_by_label("查找机柜").fill(target)
    await page.get_by_role("button", name="搜索").click()
    marker = page.locator(f"svg#map a[data-cabinet={target}]")
    await expect(marker.locator("circle.found")).to_have_count(1)
    assert await marker.get_attribute("data-state") == "online"
    await marker.click()
    await expect(page.locator("h1")).to_contain_text(target)
    await expect(page.locator("tr[data-slot]")).to_have_count(mesh.fleet.cabinets[target].slot_count)
    await shot(page, "cabinet")


async def test_ring_a_bank_and_the_emulated_bank_rings(
    context: BrowserContext, console_url: str, mesh: Mesh, admin_token: str
) -> None:
    api = mesh.client()
    bank_id = f"PB-CON{uuid.uuid4().hex[:6].upper()}"
    created = await api.call(
        "POST", f"{api.urls.device}/v1/admin/banks", token=admin_token, json={"id": bank_id, "module": True}
    )
    assert created.status == 201, created.response.text
    bank = BankModule(
        bank_id,
        created.json()["credential"]["password"],
        "127.0.0.1",
        int(os.environ["MQTT_PORT"]),
        tls=context_from_env(),
        lat=22.54,
        lon=114.05,
    )
    await bank.start()
    try:

        async def online() -> bool:
            page = await api.call(
                "GET", f"{api.urls.device}/v1/ops/devices", token=admin_token, params={"kind": "bank"}
            )
            return any(d["device_id"] == bank_id and d["online"] for d in page.json()["items"])

        await wait_for(online, timeout_s=15)
        page = await context.new_page()
        await sign_in(page, console_url, *ADMIN)
        await page.get_by_role("link", name="充电宝").click()
        await page.get_by_label("搜索").fill(bank_id)
        await page.get_by_role("button", name="筛选").click()
        await page.get_by_role("link", name=bank_id).click()
        await expect(page.locator("h1")).to_contain_text(bank_id)
        await page.get_by_role("button", name="响铃").click()
        await expect(page.get_by_role("status")).to_have_text("已发送响铃指令")
        await wait_for(lambda: _async(bool(bank.rings)), timeout_s=10)
        assert bank.ringing
        await shot(page, "bank")
    finally:
        await bank.stop()


async def test_a_maintenance_task_is_assigned_worked_and_closed_with_a_note(
    context: BrowserContext, console_url: str, mesh: Mesh, admin_token: str
) -> None:
    api = mesh.client()
    bank_id = f"PB-TSK{uuid.uuid4().hex[:6].upper()}"
    created = await api.call("POST", f"{api.urls.device}/v1/admin/banks", token=admin_token, json={"id": bank_id})
    assert created.status == 201, created.response.text
    faulty = await api.call(
        "POST",
        f"{api.urls.device}/v1/ops/banks/{bank_id}/state",
        token=admin_token,
        json={"state": "faulty", "reason": "cracked case (e2e)"},
    )
    assert faulty.status == 200, faulty.response.text
    scan = await api.call("POST", f"{api.urls.device}/v1/ops/tasks/scan", token=admin_token)
    assert scan.status == 200, scan.response.text

    page = await context.new_page()
    await sign_in(page, console_url, *ADMIN)
    await page.get_by_role("link", name="维护任务").click()
    await page.get_by_label("设备").fill(bank_id)
    await page.get_by_role("button", name="筛选").click()
    await page.get_by_role("link", name=bank_id).click()
    await page.get_by_role("button", name="分配").click()  # empty assignee: to me
    await expect(page.locator("[data-figure=task-status]")).to_have_text("已分配")
    await page.get_by_role("button", name="开始处理").click()
    await expect(page.locator("[data-figure=task-status]")).to_have_text("处理中")
    await page.get_by_label("处理结果").fill("case replaced, bank tested")
    await page.get_by_role("button", name="完成").click()
    await expect(page.locator("[data-figure=task-status]")).to_have_text("已完成")
    await expect(page.locator("[data-figure=task-note]")).to_have_text("case replaced, bank tested")
    await shot(page, "task")

    listed = await api.call("GET", f"{api.urls.device}/v1/ops/tasks", token=admin_token, params={"device_id": bank_id})
    [task] = listed.json()["items"]
    detail = (await api.call("GET", f"{api.urls.device}/v1/ops/tasks/{task['id']}", token=admin_token)).json()
    assert [h["action"] for h in detail["history"]] == ["open", "assign", "start", "done"]
    assert detail["assignee"] == detail["history"][-1]["by"]  # assigned to the signed-in staff member


async def _async(value: bool) -> bool:
    return value


async def test_answer_a_ticket_and_the_user_reads_it(
    context: BrowserContext, console_url: str, user: PlatformClient
) -> None:
    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)> the app crashes on top-up"
    reported = await user.report("app_problem", hostile)
    assert reported.status == 201, reported.response.text
    ticket_id = reported.json()["ticket_id"]

    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await sign_in(page, console_url, *ADMIN)
    await page.get_by_role("link", name="工单").click()
    await page.locator(f"tr[data-ticket='{ticket_id}'] a").click()
    await expect(page.locator("ol.thread .body").first).to_have_text(hostile)  # shown as text, never run
    answer = f"Fixed in today's release ({uuid.uuid4().hex[:6]}); please update the app."
    await page.get_by_label("回复用户").fill(answer)
    await page.get_by_role("button", name="发送回复").click()
    await expect(page.locator("ol.thread .body").last).to_have_text(answer)
    await shot(page, "ticket")
    assert dialogs == []

    async def in_inbox() -> list[dict[str, Any]]:
        return [m for m in await user.messages() if m["body"] == answer]

    await wait_for(in_inbox, timeout_s=10)


async def test_block_a_user_and_their_borrow_is_refused(
    context: BrowserContext, console_url: str, user: PlatformClient, mesh: Mesh
) -> None:
    me = (await user.call("GET", f"{user.urls.user}/v1/users/me")).json()
    page = await context.new_page()
    page.on("dialog", lambda d: d.accept())
    await sign_in(page, console_url, *ADMIN)
    await page.get_by_role("link", name="用户").click()
    await expect(page).to_have_url(re.compile(r"/users$"))  # on the users page before typing (not the dashboard)
    await page.get_by_label("搜索").fill(me["phone"][-8:])
    await page.get_by_role("button", name="搜索").click()
    await page.locator(f"tr[data-user='{me['user_id']}'] a").click()
    await page.get_by_label("原因").fill("fraud suspected (e2e)")
    await page.get_by_role("button", name="封禁").click()
    await expect(page.locator("[data-figure=status]")).to_have_text("已封禁")
    await shot(page, "user")

    async def refused() -> int | None:
        borrow = await user.borrow(sorted(mesh.fleet.cabinets)[0])
        return borrow.status if borrow.status in (401, 403) else None

    status, _ = await wait_for(refused, timeout_s=10)
    assert status in (401, 403)  # the session was ended (token_revoked) and billing refuses (user_blocked)
    relogin = await user.call(
        "POST", f"{user.urls.user}/v1/sessions", json={"login": me["phone"], "password": "e2e-password-1"}
    )
    assert (relogin.status, relogin.json()["code"]) == (403, "account_blocked")


async def test_a_refused_form_comes_back_with_the_reason_and_what_was_typed(
    context: BrowserContext, console_url: str
) -> None:
    """billing-svc refuses a second plan for one cabinet (409 plan_exists): the pricing page says so, in
    Chinese, and its form holds what was typed (the page's script puts it back)."""
    page = await context.new_page()
    await sign_in(page, console_url, *ADMIN)
    cabinet = f"CAB-REFILL-{uuid.uuid4().hex[:6]}"  # no such cabinet: the fleet's prices stay as they are
    for name in ("first plan", "second plan"):
        await page.goto(f"{console_url}/pricing")
        await page.get_by_label("适用范围").select_option("cabinet")
        await page.get_by_label("区域代码或机柜编号（默认方案留空）").fill(cabinet)
        await page.get_by_label("名称").fill(name)
        await page.get_by_label("每周期价格（元）").fill("3.5")
        await page.get_by_label("每日封顶（元）").fill("30")
        await page.get_by_role("button", name="新建计费方案").click()
        await page.wait_for_load_state()
    await expect(page).to_have_url(f"{console_url}/pricing")
    await expect(page.get_by_role("alert")).to_contain_text("该范围已有生效的计费方案 (plan_exists)")
    await expect(page.locator("form[data-refilled=true]")).to_have_attribute("action", "/pricing")
    await expect(page.get_by_label("名称")).to_have_value("second plan")
    await expect(page.get_by_label("区域代码或机柜编号（默认方案留空）")).to_have_value(cabinet)
    await expect(page.get_by_label("适用范围")).to_have_value("cabinet")
    await expect(page.get_by_label("每日封顶（元）")).to_have_value("30")
    await shot(page, "refused-form")


async def test_a_role_sees_only_what_it_may_use(
    context: BrowserContext, console_url: str, mesh: Mesh, admin_token: str
) -> None:
    api = mesh.client()
    login, password = f"analyst{uuid.uuid4().hex[:6]}", "analyst-password-1"
    created = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/admins",
        token=admin_token,
        json={"login": login, "password": password, "role": "analyst", "must_change_password": False},
    )
    assert created.status == 201, created.response.text
    page = await context.new_page()
    await sign_in(page, console_url, login, password)
    menu = await page.locator("nav a").evaluate_all("links => links.map(a => a.dataset.menu)")
    assert menu == ["nav.dashboard"]
    await expect(page.locator("[data-figure=rentals_now]")).to_be_visible()
    await expect(page.locator("[data-figure=open_alarms]")).to_have_count(0)  # devices:read is not theirs
    forbidden = await page.goto(f"{console_url}/users")
    assert forbidden is not None and forbidden.status == 403
    await expect(page.locator("h1")).to_have_text("您的角色无权使用此页面")
    # ... and the API refuses it too, whatever the console shows
    token = await api.admin_login(login, password)
    direct = await api.call("GET", f"{api.urls.user}/v1/admin/users", token=token)
    assert direct.status == 403


async def test_every_page_is_labelled_and_keyboard_usable(context: BrowserContext, console_url: str) -> None:
    page = await context.new_page()
    await page.goto(f"{console_url}/login")
    # Sign in with the keyboard alone
    await page.keyboard.press("Tab")  # the skip link comes first
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "login"
    await page.keyboard.type(ADMIN[0])
    await page.keyboard.press("Tab")
    await page.keyboard.type(ADMIN[1])
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("运营总览")

    # The skip link, then the menu, by keyboard
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.getAttribute('href')") == "#main"
    for _ in range(20):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.dataset.menu || ''") == "nav.cabinets":
            break
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/cabinets$"))

    for path in MAIN_PAGES:
        answer = await page.goto(f"{console_url}{path}")
        assert answer is not None and answer.status == 200, path
        assert await page.locator("html").get_attribute("lang") == "zh-CN"
        assert await page.locator("h1").count() == 1, path
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.name)"""
        )
        assert unlabelled == [], (path, unlabelled)
        nameless = await page.evaluate(
            """() => [...document.querySelectorAll('button, a[href]')]
                 .filter(el => !((el.textContent || '').trim() || el.getAttribute('aria-label'))).map(el => el.outerHTML)"""
        )
        assert nameless == [], (path, nameless)
        await expect(page.locator(".error")).to_have_count(0)
        await shot(page, "page-" + (path.strip("/") or "dashboard"))

    # English on request, kept for the session
    await page.goto(f"{console_url}/")
    await page.get_by_role("button", name=re.compile("English")).click()
    await expect(page.locator("h1")).to_have_text("Operations dashboard")
    await page.goto(f"{console_url}/cabinets")
    await expect(page.locator("h1")).to_have_text("Cabinets")
    assert await page.locator("html").get_attribute("lang") == "en"
    await shot(page, "page-cabinets-en")
