"""Customer service across the running mesh (issue 10): a user's fault report about a bank becomes a
ticket in notify-svc and, as a Kafka event, makes the bank unrentable in device-svc; staff find the
ticket, reply (the reply lands in the user's inbox), clear the bank (the ticket learns it) and resolve."""

import os
from typing import Any

import pytest
from mesh import Mesh
from platform_client import PlatformClient, wait_for

from device_emulator.cabinet import Cabinet

pytestmark = pytest.mark.e2e


async def _slot_of(api: PlatformClient, cabinet_id: str, bank_id: str) -> dict[str, Any]:
    timed = await api.call("GET", f"{api.urls.device}/v1/cabinets/{cabinet_id}")
    timed.response.raise_for_status()
    slot: dict[str, Any] = next(s for s in timed.json()["slots"] if s["bank_id"] == bank_id)
    return slot


async def test_fault_report_unrentable_bank_ticket_reply_and_clear(mesh: Mesh, user: PlatformClient) -> None:
    cabinets = [c for c in await user.cabinets() if c["online"] and c["banks_available"] > 0]
    cabinet_id = max(cabinets, key=lambda c: c["banks_available"])["id"]
    detail = (await user.call("GET", f"{user.urls.device}/v1/cabinets/{cabinet_id}")).json()
    bank_id = next(s["bank_id"] for s in detail["slots"] if s["rentable"])

    registered = await user.call(
        "PUT", f"{user.urls.notify}/v1/push-tokens", json={"platform": "android", "token": "fcm:e2e-phone-0001"}
    )
    assert registered.status == 204, registered.response.text
    reported = await user.report(
        "faulty_bank", "It does not charge my phone <3", bank_id=bank_id, cabinet_id=cabinet_id
    )
    assert reported.status == 201, reported.response.text
    ticket = reported.json()
    assert (ticket["status"], ticket["priority"]) == ("new", "high")
    assert ticket["description"] == "It does not charge my phone <3"

    async def held() -> bool:
        return not (await _slot_of(user, cabinet_id, bank_id))["rentable"]

    await wait_for(held, timeout_s=15)
    refused = await user.borrow(bank_id)
    assert refused.status == 409, refused.response.text
    assert refused.json()["code"] == "bank_faulty"

    admin = await user.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    queue = await user.call(
        "GET", f"{user.urls.notify}/v1/admin/tickets", token=admin, params={"bank_id": bank_id, "status": "new"}
    )
    assert [t["ticket_id"] for t in queue.json()["items"]] == [ticket["ticket_id"]]
    tasks = await user.call("GET", f"{user.urls.device}/v1/ops/maintenance-tasks", token=admin)
    assert any(t["device_id"] == bank_id and "reported faulty" in t["task"] for t in tasks.json()["items"])

    tickets = f"{user.urls.notify}/v1/admin/tickets/{ticket['ticket_id']}"
    assigned = await user.call("POST", f"{tickets}/assign", token=admin, json={"assignee": "support-e2e"})
    assert assigned.json()["status"] == "assigned"
    answer = f"Thank you: {bank_id} is out of service until a technician has checked it."
    replied = await user.call("POST", f"{tickets}/replies", token=admin, json={"text": answer})
    assert replied.status == 201, replied.response.text
    noted = await user.call("POST", f"{tickets}/notes", token=admin, json={"text": "send the field team"})
    assert noted.status == 201

    inbox = await user.messages()
    service = [m for m in inbox if m["category"] == "service"]
    assert [m["body"] for m in service] == [answer]
    thread = (await user.ticket(ticket["ticket_id"]))["entries"]
    assert [(e["author"], e["body"]) for e in thread] == [("support", answer)]  # the note stays internal

    user_id = assigned.json()["user_id"]

    async def pushed() -> list[dict[str, Any]] | None:
        timed = await user.call("GET", f"{user.urls.notify}/v1/admin/users/{user_id}/pushes", token=admin)
        jobs = [j for j in timed.json()["items"] if j["message_id"] == service[0]["message_id"]]
        return jobs if jobs and jobs[0]["outcome"] else None

    jobs, _ = await wait_for(pushed, timeout_s=15)
    assert (jobs[0]["outcome"], jobs[0]["results"]) == ("delivered", {"one-0001": "ok"})

    cleared = await user.call(
        "POST",
        f"{user.urls.device}/v1/ops/banks/{bank_id}/fault-reports/clear",
        token=admin,
        json={"note": "tested, works"},
    )
    assert cleared.status == 200, cleared.response.text
    assert cleared.json()["ticket_ids"] == [ticket["ticket_id"]]

    async def noted_on_ticket() -> bool:
        entries = (await user.ticket(ticket["ticket_id"]))["entries"]
        return any(e["author"] == "system" and bank_id in e["body"] for e in entries)

    await wait_for(noted_on_ticket, timeout_s=15)
    resolved = await user.call("POST", f"{tickets}/resolve", token=admin)
    assert resolved.json()["status"] == "resolved"

    borrowed = await user.borrow(bank_id)
    assert borrowed.status == 201, borrowed.response.text
    cabinet: Cabinet = mesh.fleet[cabinet_id]
    msg_id = await cabinet.return_bank(bank_id)
    assert await cabinet.wait_ack(msg_id, timeout_s=5) is not None
