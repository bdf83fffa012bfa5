"""Human voice service: a call-back request is a ticket in the staff queue; staff place the call through
the sandbox telephony provider, whose signed, asynchronous outcome (answered, no answer, failed) is
recorded on the request and the ticket; the provider's callback endpoint refuses what it did not sign."""

import json
import time
import uuid
from typing import Any

import pytest

from notify_svc.callbacks.provider import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

pytestmark = pytest.mark.integration

KEY = b"dev-notify-telephony-signing-key"


async def ask(client, auth, user, phone: str, **extra: Any) -> Any:
    return await client.post(
        "/v1/callbacks", headers=auth(user), json={"phone": phone, "topic": "My refund is missing", **extra}
    )


async def settled(client, auth, user, callback_id: str, wait) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        items = (await client.get("/v1/callbacks", headers=auth(user))).json()["items"]
        found: dict[str, Any] = next(c for c in items if c["callback_id"] == callback_id)
        return found if found["status"] not in ("requested", "calling") else None

    result: dict[str, Any] = await wait(check, what="the call's outcome")
    return result


async def test_a_call_back_is_queued_placed_and_its_outcome_recorded_on_the_ticket(client, auth, staff, wait):
    user = uuid.uuid4()
    created = await ask(client, auth, user, "+8613800138005", preferred_at="2026-12-06T02:00:00Z")
    assert created.status_code == 201, created.text
    callback = created.json()
    assert (callback["status"], callback["phone_suffix"]) == ("requested", "8005")
    ticket_id = callback["ticket_id"]
    ticket = (await client.get(f"/v1/tickets/{ticket_id}", headers=auth(user))).json()
    assert ticket["kind"] == "callback"

    queue = (await client.get("/v1/admin/callbacks", headers=staff(roles=("field_maintenance",)))).json()["items"]
    assert [c["callback_id"] for c in queue] == [callback["callback_id"]]
    refused = await client.post(
        f"/v1/admin/callbacks/{callback['callback_id']}/call", headers=staff(roles=("field_maintenance",))
    )
    assert refused.status_code == 403  # reading the queue is not placing calls

    placed = await client.post(f"/v1/admin/callbacks/{callback['callback_id']}/call", headers=staff())
    assert (placed.status_code, placed.json()["status"], placed.json()["attempts"]) == (200, "calling", 1)
    again = await client.post(f"/v1/admin/callbacks/{callback['callback_id']}/call", headers=staff())
    assert (again.status_code, again.json()["code"]) == (409, "callback_transition_not_allowed")

    done = await settled(client, auth, user, callback["callback_id"], wait)
    assert done["status"] == "answered" and done["duration_s"] >= 30
    thread = (await client.get(f"/v1/tickets/{ticket_id}", headers=auth(user))).json()["entries"]
    assert any(e["body"].startswith("Call back answered") for e in thread), thread


async def test_no_answer_failure_refusal_and_retry(client, auth, staff, wait):
    user = uuid.uuid4()
    outcomes = {}
    for phone in ("13800000001", "13800000002", "13800000009"):
        callback = (await ask(client, auth, user, phone)).json()
        placed = (await client.post(f"/v1/admin/callbacks/{callback['callback_id']}/call", headers=staff())).json()
        if phone.endswith("9"):  # the provider refuses the number at once
            outcomes[phone] = placed
        else:
            outcomes[phone] = await settled(client, auth, user, callback["callback_id"], wait)
    assert outcomes["13800000001"]["status"] == "no_answer"
    assert (outcomes["13800000002"]["status"], outcomes["13800000002"]["failure"]) == ("failed", "network_error")
    assert outcomes["13800000009"]["status"] == "failed"
    assert outcomes["13800000009"]["failure"].startswith("refused")
    # Not answered: support tries again.
    retry = await client.post(f"/v1/admin/callbacks/{outcomes['13800000001']['callback_id']}/call", headers=staff())
    assert (retry.json()["status"], retry.json()["attempts"]) == ("calling", 2)
    # Three open requests at most; a cancelled one frees a place.
    too_many = await ask(client, auth, user, "13800000005")
    assert (too_many.status_code, too_many.json()["code"]) == (409, "too_many_callbacks")
    cancelled = await client.post(f"/v1/callbacks/{outcomes['13800000002']['callback_id']}/cancel", headers=auth(user))
    assert cancelled.json()["status"] == "cancelled"
    assert (await ask(client, auth, user, "13800000005")).status_code == 201


async def test_bad_requests_and_unsigned_provider_callbacks_are_refused(client, auth, staff):
    user, other = uuid.uuid4(), uuid.uuid4()
    assert (await ask(client, auth, user, "call me maybe")).status_code == 422
    foreign = (await client.post("/v1/tickets", headers=auth(other), json={"kind": "other", "text": "hi"})).json()
    response = await ask(client, auth, user, "13800000005", ticket_id=foreign["ticket_id"])
    assert (response.status_code, response.json()["code"]) == (404, "ticket_not_found")
    mine = (await ask(client, auth, other, "13800000005", ticket_id=foreign["ticket_id"])).json()
    assert mine["ticket_id"] == foreign["ticket_id"]
    cancel = await client.post(f"/v1/callbacks/{mine['callback_id']}/cancel", headers=auth(user))
    assert (cancel.status_code, cancel.json()["code"]) == (404, "callback_not_found")
    hotline = (await client.get("/v1/support/hotline")).json()
    assert hotline["hotline"] == "400-800-1234"

    event = {"call_id": "sbx-call-unknown", "outcome": "answered", "duration_s": 10, "at": "2026-12-05T05:00:00Z"}
    body = json.dumps(event).encode()
    now = str(int(time.time()))

    async def post(content: bytes, timestamp: str, signature: str) -> Any:
        headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp, "Content-Type": "application/json"}
        return await client.post("/v1/telephony/events", content=content, headers=headers)

    cases = [
        (body, now, "0" * 64, 401, "invalid_signature"),
        (body, str(int(time.time()) - 3600), sign(KEY, str(int(time.time()) - 3600), body), 401, "invalid_signature"),
        (b"{not json", now, sign(KEY, now, b"{not json"), 400, "malformed_event"),
        (body, now, sign(KEY, now, body), 404, "call_not_found"),
    ]
    for content, timestamp, signature, status, code in cases:
        response = await post(content, timestamp, signature)
        assert (response.status_code, response.json()["code"]) == (status, code)
