"""Notices with images (6.1.6, 6.3.8): staff write, attach images checked by their bytes, publish;
every user's inbox shows the notice (one row, not one per user) with expiring signed image URLs."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from contracts.events import NoticePublished, RentalEnded

pytestmark = pytest.mark.integration


async def draft(client, staff, **body: Any) -> Any:
    body = {"kind": "system", "title": "Maintenance tonight", "text": "The app pauses 02:00-02:10."} | body
    response = await client.post("/v1/admin/notices", headers=staff(), json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def upload(client, staff, notice_id: str, data: bytes, content_type: str = "image/png") -> Any:
    return await client.post(
        f"/v1/admin/notices/{notice_id}/images", headers=staff() | {"Content-Type": content_type}, content=data
    )


async def test_a_published_notice_with_an_image_reaches_every_inbox(client, auth, staff, recorder, png, jpeg):
    notice = await draft(client, staff, kind="operations", title="New cabinets", text="<b>3 new</b> at the station")
    # Declared as a PNG named like one, but not an image: refused by its content.
    response = await upload(client, staff, notice["notice_id"], b"<svg onload=alert(1)>", "image/png")
    assert response.status_code == 415
    assert response.json()["code"] == "not_an_image"
    picture = png()
    response = await upload(client, staff, notice["notice_id"], picture, "application/octet-stream")
    assert response.status_code == 201, response.text
    assert (response.json()["content_type"], response.json()["size"]) == ("image/png", len(picture))
    assert (await upload(client, staff, notice["notice_id"], jpeg)).json()["content_type"] == "image/jpeg"

    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert (await client.get("/v1/messages", headers=auth(alice))).json()["items"] == []  # a draft is nobody's
    response = await client.post(f"/v1/admin/notices/{notice['notice_id']}/publish", headers=staff())
    assert response.status_code == 200, response.text
    event = await recorder.wait_for(
        lambda e: isinstance(e.data, NoticePublished) and str(e.data.notice_id) == notice["notice_id"]
    )
    assert isinstance(event.data, NoticePublished)
    assert event.data.image_count == 2

    for user in (alice, bob):
        items = (await client.get("/v1/messages", headers=auth(user))).json()["items"]
        assert len(items) == 1
        item = items[0]
        assert (item["message_id"], item["category"]) == (notice["notice_id"], "operations")
        assert item["body"] == "<b>3 new</b> at the station"
        assert [i["content_type"] for i in item["images"]] == ["image/png", "image/jpeg"]
    url = items[0]["images"][0]["url"]
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == picture
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"

    # Tampered or expired URLs are refused.
    query = parse_qs(urlparse(url).query)
    path = urlparse(url).path
    forged = await client.get(path, params={"exp": int(query["exp"][0]) + 3600, "sig": query["sig"][0]})
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_signature")
    other = await client.get(f"/v1/media/{uuid.uuid4()}", params={"exp": query["exp"][0], "sig": query["sig"][0]})
    assert other.json()["code"] == "invalid_signature"
    assert (await client.get(path)).status_code == 422
    from notify_svc.notices.signing import UrlSigner

    expired = UrlSigner(b"dev-notify-media-signing-key", 10).url(uuid.UUID(path.rsplit("/", 1)[1]), time.time() - 60)
    response = await client.get(expired)
    assert (response.status_code, response.json()["code"]) == (403, "url_expired")

    # Per-user state: Alice reads and deletes hers; Bob's stays unread.
    counts = (await client.get("/v1/messages/unread-count", headers=auth(alice))).json()
    assert counts["by_category"]["operations"] == 1
    read = await client.post(f"/v1/messages/{notice['notice_id']}/read", headers=auth(alice))
    assert read.status_code == 200 and read.json()["read_at"] is not None
    assert len(read.json()["images"]) == 2
    assert (await client.get("/v1/messages/unread-count", headers=auth(alice))).json()["unread"] == 0
    assert (await client.get("/v1/messages/unread-count", headers=auth(bob))).json()["unread"] == 1
    assert (await client.delete(f"/v1/messages/{notice['notice_id']}", headers=auth(alice))).status_code == 204
    assert (await client.get("/v1/messages", headers=auth(alice))).json()["items"] == []
    assert (await client.delete(f"/v1/messages/{notice['notice_id']}", headers=auth(alice))).status_code == 404
    assert len((await client.get("/v1/messages", headers=auth(bob))).json()["items"]) == 1
    assert (await client.post("/v1/messages/read-all", headers=auth(bob))).json() == {"marked": 1}
    assert (await client.post("/v1/messages/read-all", headers=auth(bob))).json() == {"marked": 0}

    # A published notice no longer changes.
    response = await upload(client, staff, notice["notice_id"], png())
    assert (response.status_code, response.json()["code"]) == (409, "notice_already_published")
    again = await client.post(f"/v1/admin/notices/{notice['notice_id']}/publish", headers=staff())
    assert again.json()["code"] == "notice_already_published"


async def test_notices_and_messages_share_one_cursor(client, auth, staff, bus, wait):
    user = uuid.uuid4()

    def ended(user_id: uuid.UUID, fee: int) -> RentalEnded:
        now = datetime.now(UTC)
        return RentalEnded(
            rental_id=uuid.uuid4(),
            user_id=user_id,
            bank_id="PB-000001",
            start_cabinet_id="CAB-0001",
            return_cabinet_id="CAB-0001",
            started_at=now - timedelta(minutes=5),
            ended_at=now,
            duration_seconds=300,
            fee_fen=fee,
        )

    async def wait_for_count(client, headers, wait, n):
        async def check():
            items = (await client.get("/v1/messages", headers=headers, params={"limit": 100})).json()["items"]
            return len(items) >= n

        await wait(check, what=f"{n} items")

    await bus.publish(ended(user, fee=1), key=str(user))
    await wait_for_count(client, auth(user), wait, 1)
    first = await draft(client, staff, title="first")
    await client.post(f"/v1/admin/notices/{first['notice_id']}/publish", headers=staff())
    await bus.publish(ended(user, fee=2), key=str(user))
    await wait_for_count(client, auth(user), wait, 3)
    second = await draft(client, staff, title="second", kind="system")
    await client.post(f"/v1/admin/notices/{second['notice_id']}/publish", headers=staff())

    titles, before = [], None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"before": before} if before else {})
        page = (await client.get("/v1/messages", headers=auth(user), params=params)).json()
        titles += [m["title"] for m in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert titles == ["second", "Rental ended", "first", "Rental ended"]
    system = (await client.get("/v1/messages", headers=auth(user), params={"category": "system"})).json()["items"]
    assert [m["title"] for m in system] == ["second", "first"]
    assert (await client.post("/v1/messages/read-all", headers=auth(user), params={"category": "rental"})).json() == {
        "marked": 2
    }
    assert (await client.get("/v1/messages/unread-count", headers=auth(user))).json()["unread"] == 2


async def test_bad_notices_and_uploads(client, auth, staff, settings, png):
    for body in ({"kind": "marketing", "title": "x", "text": "y"}, {"kind": "system", "title": "", "text": "y"}, {}):
        response = await client.post("/v1/admin/notices", headers=staff(), json=body)
        assert response.status_code == 422, body
    notice = await draft(client, staff)
    too_big = png() + b"\x00" * settings.notice_image_max_bytes
    response = await upload(client, staff, notice["notice_id"], too_big)
    assert (response.status_code, response.json()["code"]) == (413, "image_too_large")
    response = await upload(client, staff, notice["notice_id"], b"")
    assert response.json()["code"] == "not_an_image"
    for _ in range(settings.notice_max_images):
        assert (await upload(client, staff, notice["notice_id"], png())).status_code == 201
    response = await upload(client, staff, notice["notice_id"], png())
    assert (response.status_code, response.json()["code"]) == (409, "too_many_images")
    response = await upload(client, staff, str(uuid.uuid4()), png())
    assert (response.status_code, response.json()["code"]) == (404, "notice_not_found")
    # Only staff with notices:send.
    assert (await client.post("/v1/admin/notices", headers=auth(uuid.uuid4()), json={})).status_code == 403
    analyst = staff(roles=("analyst",))
    assert (await client.get("/v1/admin/notices", headers=analyst)).status_code == 403
    assert (await client.get("/v1/admin/notices", headers=staff(roles=("operator",)))).status_code == 200
    # An unpublished notice's images are not served, even with a valid signature.
    listed = (await client.get(f"/v1/admin/notices/{notice['notice_id']}", headers=staff())).json()
    response = await client.get(listed["images"][0]["url"])
    assert (response.status_code, response.json()["code"]) == (404, "image_not_found")
