"""Photos on reports: typed by their bytes, limited in size and count, on the user's own open ticket
only, served through the same signed, expiring URLs as notice images, to the user and to staff."""

import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.integration


async def test_photos_on_a_report(client, auth, staff, png, jpeg):
    user, other = uuid.uuid4(), uuid.uuid4()
    ticket = (
        await client.post(
            "/v1/tickets",
            headers=auth(user),
            json={"kind": "faulty_bank", "text": "Cable torn", "bank_id": "B-PHOTO-1"},
        )
    ).json()
    path = f"/v1/tickets/{ticket['ticket_id']}/photos"

    async def upload(data: bytes, who: uuid.UUID = user) -> dict[str, Any]:
        headers = auth(who) | {"Content-Type": "image/png"}
        response = await client.post(path, headers=headers, content=data)
        return {"status": response.status_code, **response.json()}

    first = await upload(png(4, 3))
    assert (first["status"], first["content_type"]) == (201, "image/png")
    assert (await upload(jpeg))["content_type"] == "image/jpeg"
    refused = await upload(b"<svg onload=alert(1)>")
    assert (refused["status"], refused["code"]) == (415, "not_an_image")
    too_big = await upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * (2 * 1024 * 1024 + 1))
    assert (too_big["status"], too_big["code"]) == (413, "image_too_large")
    foreign = await upload(png(), other)
    assert (foreign["status"], foreign["code"]) == (404, "ticket_not_found")
    assert (await upload(png(1, 1)))["status"] == 201
    fourth = await upload(png(2, 2))
    assert (fourth["status"], fourth["code"]) == (409, "too_many_images")

    mine = (await client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=auth(user))).json()
    assert [p["content_type"] for p in mine["photos"]] == ["image/png", "image/jpeg", "image/png"]
    seen = (await client.get(f"/v1/admin/tickets/{ticket['ticket_id']}", headers=staff())).json()
    assert [p["image_id"] for p in seen["photos"]] == [p["image_id"] for p in mine["photos"]]

    url = mine["photos"][0]["url"]
    served = await client.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png" and served.content == png(4, 3)
    query = parse_qs(urlparse(url).query)
    forged = f"{urlparse(url).path}?exp={int(query['exp'][0]) + 60}&sig={query['sig'][0]}"
    bad = await client.get(forged)
    assert (bad.status_code, bad.json()["code"]) == (403, "invalid_signature")

    await client.post(f"/v1/tickets/{ticket['ticket_id']}/close", headers=auth(user))
    closed = await upload(png())
    assert (closed["status"], closed["code"]) == (409, "ticket_not_open")
