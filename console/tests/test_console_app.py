"""The console's own rules, without the services: money and time formatting, masking, session expiry,
the catalogue covering every template key, and the safety headers and CSRF refusal on sign-in."""

import base64
import re
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from console import formatting, qr
from console.i18n import CATALOGUE
from console.main import create_app
from console.sessions import SessionStore
from console.settings import ConsoleSettings
from console.web import TEMPLATES


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


def test_phone_numbers_are_masked() -> None:
    assert formatting.mask_phone("+8613812345678") == "+86138****5678"


def test_a_session_ends_when_idle_or_when_its_token_expires(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = SessionStore(idle_timeout_s=60)
    s = store.create(admin_id="a", login="admin", roles=["support"], access_token="t", expires_in=900, lang="zh")
    assert s.can("tickets:manage") and not s.can("audit:read")
    now[0] += 59
    assert store.get(s.session_id) is s
    now[0] += 61
    assert store.get(s.session_id) is None  # idle too long
    s = store.create(admin_id="a", login="admin", roles=["super_admin"], access_token="t", expires_in=120, lang="zh")
    for _ in range(3):
        now[0] += 50
        found = store.get(s.session_id)
    assert found is None  # the token expired (minus the margin) although the session was in use
    assert store.get("unknown") is None


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


def test_live_figures_are_well_formed_events_and_do_not_keep_a_session_alive(monkeypatch) -> None:
    from console.pages.dashboard import sse

    assert sse("figures", "<dl>\n<dd>3</dd>\n</dl>") == "event: figures\ndata: <dl>\ndata: <dd>3</dd>\ndata: </dl>\n\n"
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = SessionStore(idle_timeout_s=60)
    s = store.create(admin_id="a", login="admin", roles=["analyst"], access_token="t", expires_in=900, lang="zh")
    now[0] += 40
    assert store.peek(s.session_id) is s  # looked up by the stream: the idle clock keeps running
    now[0] += 30
    assert store.peek(s.session_id) is None and store.get(s.session_id) is None


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
