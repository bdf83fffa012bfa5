"""The console's staff pages over plain HTTP (helpers in console_http.py): staff accounts, the
forced password change, the second factor at sign-in; checked against user-svc's API."""

import base64
import re
import time
import uuid
from collections.abc import Callable
from html import unescape

import pyotp
import pytest
import qrcode
import qrcode.constants
from console_http import (
    ADMIN,
    Browserless,
    menu,
    text,
)
from mesh import Mesh
from platform_client import wait_for

pytestmark = pytest.mark.e2e


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
