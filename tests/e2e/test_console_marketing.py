"""The console's marketing pages over plain HTTP: a notice with an image, a campaign counted, scheduled and
followed, ads and value-added services; checked against notify-svc's API."""

import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from console_http import (
    ADMIN,
    SHANGHAI,
    Browserless,
    local_minute,
    menu,
    staff_member,
    text,
)
from mesh import Mesh, new_user
from platform_client import PlatformClient, tiny_png, wait_for

pytestmark = pytest.mark.e2e


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
    assert (fake.status_code, fake.headers["location"]) == (303, notice_url)  # back to the form, which says why
    assert text(await admin.page(notice_url), "problem") == "文件不是图片 (not_an_image)"  # notify-svc checks content
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
    assert f'<input type="hidden" name="back" value="/users/{me}">' in await admin.page(f"/users/{me}")
    again = await admin.post(f"/vas-charges/{consent_id}/refund", form | {"back": f"/users/{me}"})  # once: 409
    assert (again.status_code, again.headers["location"]) == (303, f"/users/{me}")
    shown = text(await admin.page(f"/users/{me}"), "problem")
    assert shown == "该费用无法退款（已退款或未支付） (vas_charge_not_refundable)"

    async def told() -> bool:
        return any(m["title"] == "Refund received" for m in await user.messages())

    await wait_for(told, timeout_s=15, interval_s=0.3)
    # notify-svc's projection moved with the message: the user's consent shows the payment refunded, with why.
    mine = (await user.call("GET", f"{user.urls.notify}/v1/value-added-services/consents")).json()["items"]
    assert (mine[0]["payment"], mine[0]["refund"]["reason"]) == ("refunded", "cover <not> delivered")
    assert (await admin.post(f"/vas/{code}/retire")).status_code == 303
    assert text(await admin.page(f"/vas/{code}"), "vas-state").startswith("已下架")
