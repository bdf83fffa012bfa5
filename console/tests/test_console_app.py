"""The console's own rules, without the services: money and time formatting, masking, session expiry,
the catalogue covering every template key, and the safety headers and CSRF refusal on sign-in."""

import base64
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography.exceptions import InvalidTag
from fastapi.testclient import TestClient
from sqlalchemy import select

from console import formatting, qr, sessions
from console.i18n import CATALOGUE
from console.main import create_app
from console.models import console_sessions
from console.problems import Problem
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.web import TEMPLATES
from kit.db import make_engine


@pytest.fixture
async def store() -> AsyncIterator[SessionStore]:
    """The session store on the test stack's console database (migrated by `make test`), emptied first."""
    url = os.environ.get("CONSOLE_DATABASE_URL")
    if not url:
        pytest.fail("CONSOLE_DATABASE_URL is not set: run through `make test` (the stack's env file sets it)")
    engine = make_engine(url, 2)
    async with engine.begin() as db:
        await db.execute(console_sessions.delete())
    yield SessionStore(engine, idle_timeout_s=60, secret="unit-test-key")
    await engine.dispose()


@pytest.fixture
async def other_store(store: SessionStore) -> AsyncIterator[SessionStore]:
    """A second replica: its own engine (connections) on the same database."""
    engine = make_engine(str(store.engine.url.render_as_string(hide_password=False)), 2)
    yield SessionStore(engine, idle_timeout_s=60, secret="unit-test-key")
    await engine.dispose()


def test_money_is_yuan_with_fen_precision() -> None:
    assert formatting.yuan(0) == "¥0.00"
    assert formatting.yuan(150) == "¥1.50"
    assert formatting.yuan(123456789) == "¥1,234,567.89"
    assert formatting.yuan(-5) == "-¥0.05"


def test_amounts_typed_in_yuan_are_read_as_integer_fen() -> None:
    assert [formatting.fen_of(v) for v in ("0", "1.5", "1.50", "¥12.05", " 1,234.5 ", "99")] == [
        0,
        150,
        150,
        1205,
        123450,
        9900,
    ]
    for bad in ("", "-1", "1.005", "1e3", "abc", "1.2.3", "0x10"):
        with pytest.raises(ValueError):
            formatting.fen_of(bad)


def test_times_are_shown_in_the_operators_zone() -> None:
    moment = datetime(2026, 12, 4, 18, 30, tzinfo=UTC)
    assert formatting.local_time(moment.isoformat(), ZoneInfo("Asia/Shanghai")) == "2026-12-05 02:30"
    assert formatting.local_time(None, ZoneInfo("Asia/Shanghai")) == "-"


def test_today_on_the_dashboard_starts_at_the_operators_midnight() -> None:
    from console.pages.dashboard import start_of_today

    shanghai = ZoneInfo("Asia/Shanghai")
    # 17:00 UTC on the 5th is already 01:00 on the 6th in Shanghai.
    start = start_of_today(shanghai, datetime(2026, 12, 5, 17, 0, tzinfo=UTC))
    assert start == datetime(2026, 12, 6, tzinfo=shanghai) and start.utcoffset() == timedelta(hours=8)
    assert start_of_today(shanghai, datetime(2026, 12, 5, 15, 59, tzinfo=UTC)) == datetime(2026, 12, 5, tzinfo=shanghai)


def test_a_refused_form_keeps_what_was_typed_but_no_secret() -> None:
    problem = Problem(409, "plan_exists", "exists").with_form(
        "/pricing", {"name": "<b>x</b>", "new_password": "s3cret", "totp_code": "123456", "back": "/pricing"}
    )
    assert problem.form == {"name": "<b>x</b>", "back": "/pricing"}
    assert Problem.of(problem.as_dict()) == problem
    assert '"action": "/pricing"' in problem.refill() and Problem(409, "x", "y").refill() == ""
    assert Problem(422, "x", "y").with_form("/p", {"text": "a" * 20_000}).form == {}  # too much to keep


def test_phone_numbers_are_masked() -> None:
    assert formatting.mask_phone("+8613812345678") == "+86138****5678"


async def test_a_session_ends_when_idle_or_when_its_token_expires(monkeypatch, store) -> None:
    clock = [datetime(2026, 12, 6, 8, 0, tzinfo=UTC)]
    monkeypatch.setattr(sessions, "now", lambda: clock[0])
    s = await store.create(admin_id="a", login="admin", roles=["support"], access_token="t", expires_in=900, lang="zh")
    assert s.can("tickets:manage") and not s.can("audit:read")
    clock[0] += timedelta(seconds=59)
    assert (await store.get(s.session_id)).login == "admin"
    clock[0] += timedelta(seconds=61)
    assert await store.get(s.session_id) is None  # idle too long
    s = await store.create(
        admin_id="a", login="admin", roles=["super_admin"], access_token="t", expires_in=120, lang="zh"
    )
    for _ in range(3):
        clock[0] += timedelta(seconds=50)
        found = await store.get(s.session_id)
    assert found is None  # the token expired (minus the margin) although the session was in use
    assert await store.get("unknown") is None


async def test_replicas_share_sessions_and_a_sign_out_ends_it_on_every_one(store, other_store) -> None:
    """Two stores on the same database, as two console processes: a sign-in on one is known to the other,
    the tokens are stored encrypted under a hash of the cookie, and a sign-out on either ends it for both."""
    s = await store.create(
        admin_id="a",
        login="ops",
        roles=["operator"],
        access_token="secret-access",
        expires_in=900,
        lang="en",
        refresh_token="secret-refresh",
        refresh_expires_in=1800,
    )
    there = await other_store.get(s.session_id)
    assert there is not None and (there.access_token, there.refresh_token, there.csrf_token) == (
        "secret-access",
        "secret-refresh",
        s.csrf_token,
    )
    async with store.engine.connect() as db:
        [row] = (await db.execute(select(console_sessions).where(console_sessions.c.login == "ops"))).all()
    assert row.id_hash != s.session_id and s.session_id not in row.id_hash
    assert b"secret-access" not in row.tokens and b"secret-refresh" not in row.tokens
    await store.set_lang(s, "zh")
    await other_store.set_problem(s.session_id, Problem(409, "eject_pending", "An eject is pending"))
    back = await store.get(s.session_id)
    assert back is not None and back.lang == "zh"
    assert (await store.take_problem(back)) == Problem(409, "eject_pending", "An eject is pending")
    assert (await other_store.get(s.session_id)).problem is None  # shown once
    await other_store.end(s.session_id)
    assert await store.get(s.session_id) is None
    wrong_key = SessionStore(store.engine, idle_timeout_s=60, secret="another-key")
    t = await store.create(admin_id="b", login="x", roles=[], access_token="t", expires_in=900, lang="zh")
    with pytest.raises(InvalidTag):  # a database copy without the key gives no token
        await wrong_key.get(t.session_id)


def test_every_template_key_is_in_the_catalogue() -> None:
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"t\('([a-z_]+(?:\.[a-z_]+)?)'", template.read_text()))
    assert used, "no keys found"
    assert used - set(CATALOGUE) == set()


def test_sign_in_page_has_the_safety_headers_and_refuses_a_forged_post() -> None:
    with TestClient(create_app(ConsoleSettings(user_svc_url="http://127.0.0.1:9"))) as client:
        page = client.get("/login")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text and 'src="/static/console.js"' in page.text
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        # no CSRF field: refused before user-svc is asked
        assert client.post("/login", data={"login": "admin", "password": "x"}).status_code == 403
        assert client.get("/", follow_redirects=False).headers["location"] == "/login"


async def test_live_figures_are_well_formed_events_and_do_not_keep_a_session_alive(monkeypatch, store) -> None:
    from console.pages.dashboard import sse

    assert sse("figures", "<dl>\n<dd>3</dd>\n</dl>") == "event: figures\ndata: <dl>\ndata: <dd>3</dd>\ndata: </dl>\n\n"
    clock = [datetime(2026, 12, 6, 8, 0, tzinfo=UTC)]
    monkeypatch.setattr(sessions, "now", lambda: clock[0])
    s = await store.create(admin_id="a", login="admin", roles=["analyst"], access_token="t", expires_in=900, lang="zh")
    clock[0] += timedelta(seconds=40)
    assert (await store.peek(s.session_id)) is not None  # looked up by the stream: the idle clock keeps running
    clock[0] += timedelta(seconds=30)
    assert await store.peek(s.session_id) is None and await store.get(s.session_id) is None


def test_the_authenticator_qr_code_is_the_uri_s_modules_as_an_svg_image() -> None:
    uri = "otpauth://totp/Powerbank:ops1?secret=JBSWY3DPEHPK3PXP&issuer=Powerbank"
    grid = qr.modules(uri)
    assert len(grid) == len(grid[0]) and len(grid) >= 21 + 8  # version 1 or more, 4-module quiet zone each side
    assert not any(grid[0]) and not any(row[0] for row in grid)  # the quiet zone is light
    # the three finder patterns: a 7x7 dark ring at three corners inside the quiet zone
    for top, left in ((4, 4), (4, len(grid) - 11), (len(grid) - 11, 4)):
        assert all(grid[top][left + i] and grid[top + 6][left + i] for i in range(7))
        assert all(grid[top + i][left] and grid[top + i][left + 6] for i in range(7))
    picture = base64.b64decode(qr.data_uri(uri).removeprefix("data:image/svg+xml;base64,")).decode()
    assert picture.startswith("<svg") and picture.count("h1v1h-1z") == sum(map(sum, grid))
    assert qr.modules(uri + "x") != grid  # the picture carries the key


async def test_the_cabinet_list_pages_through_the_whole_fleet() -> None:
    """Cabinets past device-svc's first page of 1,000 are found and listed (issue 16), a page of rows at a time."""
    from types import SimpleNamespace

    from console.pages import devices

    fleet = [
        {"id": f"CAB-{n:05d}", "online": True, "banks_available": 1, "free_slots": 1, "name": "", "address": ""}
        for n in range(2500)
    ]
    reads: list[str | None] = []

    async def get(url: str, token: str, **params: object) -> dict[str, object]:
        after, limit = params.get("after"), int(str(params["limit"]))
        reads.append(after if isinstance(after, str) else None)
        start = next((i + 1 for i, c in enumerate(fleet) if c["id"] == after), 0)
        items = [dict(c) for c in fleet[start : start + limit]]
        return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}

    console = SimpleNamespace(backend=SimpleNamespace(get=get, services=SimpleNamespace(device="http://device")))
    staff = SimpleNamespace(access_token="t")
    alarms = [{"device_id": "CAB-02222", "device_kind": "cabinet"}]

    def sevens(c: dict[str, object]) -> bool:
        return str(c["id"]).endswith("7")

    first, cursor = await devices._scan_cabinets(console, staff, alarms, sevens, wanted=100)  # type: ignore[arg-type]
    assert [c["id"] for c in first][-1] == "CAB-00997" and cursor == "CAB-00997" and len(first) == 100
    rest, end = await devices._scan_cabinets(console, staff, alarms, sevens, after=cursor, wanted=1000)  # type: ignore[arg-type]
    assert len(rest) == 150 and end is None and rest[0]["id"] == "CAB-01007"
    everything, _ = await devices._scan_cabinets(console, staff, alarms, lambda c: True)  # type: ignore[arg-type]
    assert len(everything) == 2500 and reads[-3:] == [None, "CAB-00999", "CAB-01999"]
    assert next(c for c in everything if c["id"] == "CAB-02222")["status"] == "alarm"
