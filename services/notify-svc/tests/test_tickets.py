"""Feedback and tickets (6.1.7, 6.3.9) against the real database and broker: reports, the lifecycle
over HTTP, replies into the inbox, internal notes, permissions, search, the SLA alert, and the bank
fault report that device-svc acts on."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.events import BankFaultCleared, BankFaultReported, TicketOpened, TicketOverdue, TicketStatusChanged

pytestmark = pytest.mark.integration


async def report(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    body = {"kind": "app_problem", "text": "the map does not load"} | body
    response = await client.post("/v1/tickets", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_faulty_bank_report_is_a_ticket_and_an_event_for_device_svc(client, auth, recorder):
    user = uuid.uuid4()
    rental = uuid.uuid4()
    text_with_markup = "<script>alert(1)</script> the cable is <b>cut</b>"
    ticket = await report(
        client, auth(user), kind="faulty_bank", text=text_with_markup, bank_id="PB-TEST-07", rental_id=str(rental)
    )
    assert ticket["status"] == "new"
    assert ticket["priority"] == "high"
    assert ticket["description"] == text_with_markup  # stored and served as text, never sanitised into markup
    assert ticket["overdue"] is False
    assert ticket["entries"] == []
    due = datetime.fromisoformat(ticket["sla_due_at"]) - datetime.fromisoformat(ticket["created_at"])
    assert due == timedelta(hours=8)

    fault = await recorder.wait_for(
        lambda e: isinstance(e.data, BankFaultReported) and str(e.data.ticket_id) == ticket["ticket_id"],
        what="notify.bank.fault_reported",
    )
    assert fault.key == "PB-TEST-07"
    assert fault.topic.value == "notify.reports.v1"
    assert isinstance(fault.data, BankFaultReported)
    assert (fault.data.user_id, fault.data.rental_id, fault.data.kind) == (user, rental, "faulty_bank")
    opened = await recorder.wait_for(
        lambda e: isinstance(e.data, TicketOpened) and str(e.data.ticket_id) == ticket["ticket_id"],
        what="notify.ticket.opened",
    )
    assert opened.key == ticket["ticket_id"]

    # An app problem is a ticket too, without any device event.
    other = await report(client, auth(user))
    assert other["priority"] == "normal"
    await recorder.wait_for(lambda e: str(getattr(e.data, "ticket_id", "")) == other["ticket_id"])
    assert not [
        e
        for e in recorder.seen
        if isinstance(e.data, BankFaultReported) and str(e.data.ticket_id) == other["ticket_id"]
    ]


async def test_bad_reports_answer_problems(client, auth, staff):
    user = auth(uuid.uuid4())
    cases = [
        ({"kind": "faulty_bank", "text": "broken"}, 422, "bank_code_required"),
        ({"kind": "damaged_cable", "text": "cut", "cabinet_id": "CAB-0001"}, 422, "bank_code_required"),
        ({"kind": "lost_cat", "text": "x"}, 422, "validation_error"),
        ({"kind": "other", "text": "   "}, 422, "validation_error"),
        ({"kind": "other", "text": "x" * 2001}, 422, "validation_error"),
        ({"kind": "other", "text": "x", "bank_id": "PB 1; DROP"}, 422, "validation_error"),
        ({"kind": "other", "text": "x", "rental_id": "nope"}, 422, "validation_error"),
        ({"kind": "other", "text": "x", "photos": []}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await client.post("/v1/tickets", headers=user, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/tickets", json={"kind": "other", "text": "x"})).status_code == 401
    response = await client.post("/v1/tickets", headers=staff(), json={"kind": "other", "text": "x"})
    assert response.status_code == 403
    response = await client.post(
        "/v1/tickets",
        headers=user,
        content=b"{not json",
    )
    assert response.status_code == 422


async def test_reports_are_rate_limited(client, auth):
    user = auth(uuid.uuid4())
    for _ in range(10):
        await report(client, user)
    response = await client.post("/v1/tickets", headers=user, json={"kind": "other", "text": "one more"})
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_reports"


async def test_users_see_only_their_own_tickets(client, auth):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    mine = await report(client, auth(alice), text="alice's")
    await report(client, auth(bob), text="bob's")
    page = (await client.get("/v1/tickets", headers=auth(alice))).json()
    assert [t["description"] for t in page["items"]] == ["alice's"]
    for method, path, body in [
        ("GET", f"/v1/tickets/{mine['ticket_id']}", None),
        ("POST", f"/v1/tickets/{mine['ticket_id']}/replies", {"text": "hi"}),
        ("POST", f"/v1/tickets/{mine['ticket_id']}/close", None),
    ]:
        response = await client.request(method, path, headers=auth(bob), json=body)
        assert response.status_code == 404, path
        assert response.json()["code"] == "ticket_not_found"
    assert (await client.get(f"/v1/tickets/{mine['ticket_id']}", headers=auth(alice))).status_code == 200


async def test_a_staff_reply_reaches_the_inbox_and_the_thread_notes_stay_internal(client, auth, staff, recorder):
    user = uuid.uuid4()
    ticket = await report(client, auth(user), kind="damaged_cable", text="cable frayed", bank_id="PB-TEST-02")
    tid = ticket["ticket_id"]
    agent = staff("agent-7")

    response = await client.post(f"/v1/admin/tickets/{tid}/assign", headers=agent, json={"assignee": "agent-7"})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["assignee"]) == ("assigned", "agent-7")
    response = await client.post(f"/v1/admin/tickets/{tid}/notes", headers=agent, json={"text": "user is a regular"})
    assert response.status_code == 201
    assert response.json()["internal"] is True
    reply_text = "Thanks! Which cabinet did you take it from? <i>not markup</i>"
    response = await client.post(
        f"/v1/admin/tickets/{tid}/replies", headers=agent, json={"text": reply_text, "wait_for_user": True}
    )
    assert response.status_code == 201, response.text

    inbox = (await client.get("/v1/messages", headers=auth(user))).json()["items"]
    assert len(inbox) == 1
    assert inbox[0]["category"] == "service"
    assert inbox[0]["title"] == "Customer service replied to your damaged cable"
    assert inbox[0]["body"] == reply_text
    counts = (await client.get("/v1/messages/unread-count", headers=auth(user))).json()
    assert counts["unread"] == 1
    assert counts["by_category"]["service"] == 1

    seen = (await client.get(f"/v1/tickets/{tid}", headers=auth(user))).json()
    assert seen["status"] == "waiting_user"
    assert [(e["author"], e["body"]) for e in seen["entries"]] == [("support", reply_text)]
    assert "assignee" not in seen

    response = await client.post(f"/v1/tickets/{tid}/replies", headers=auth(user), json={"text": "CAB-0003"})
    assert response.status_code == 201
    assert response.json()["author"] == "you"
    full = (await client.get(f"/v1/admin/tickets/{tid}", headers=agent)).json()
    assert full["status"] == "assigned"
    assert full["user_id"] == str(user)
    assert [(e["author"], e["internal"]) for e in full["entries"]] == [
        ("agent-7", True),  # the assignment line
        ("agent-7", True),  # the note
        ("agent-7", False),
        ("user", False),
    ]

    assert (await client.post(f"/v1/admin/tickets/{tid}/resolve", headers=agent)).json()["status"] == "resolved"
    response = await client.post(f"/v1/tickets/{tid}/replies", headers=auth(user), json={"text": "still broken"})
    assert response.status_code == 409
    assert response.json()["code"] == "ticket_transition_not_allowed"
    assert (await client.post(f"/v1/tickets/{tid}/reopen", headers=auth(user))).json()["status"] == "reopened"
    assert (await client.post(f"/v1/tickets/{tid}/close", headers=auth(user))).json()["status"] == "closed"
    response = await client.post(f"/v1/admin/tickets/{tid}/resolve", headers=agent)
    assert response.status_code == 409

    async def transitions() -> list[tuple[str, str]] | None:
        found = [
            (e.data.from_status.value, e.data.to_status.value)
            for e in recorder.seen
            if isinstance(e.data, TicketStatusChanged) and str(e.data.ticket_id) == tid
        ]
        return found if len(found) >= 6 else None

    from kit.testing import eventually

    assert await eventually(transitions, what="six status changes") == [
        ("new", "assigned"),
        ("assigned", "waiting_user"),
        ("waiting_user", "assigned"),
        ("assigned", "resolved"),
        ("resolved", "reopened"),
        ("reopened", "closed"),
    ]


async def test_staff_endpoints_check_permissions(client, auth, staff):
    user = uuid.uuid4()
    tid = (await report(client, auth(user)))["ticket_id"]
    assert (await client.get("/v1/admin/tickets", headers=auth(user))).status_code == 403
    assert (await client.get("/v1/admin/tickets", headers=staff(roles=("analyst",)))).status_code == 403
    assert (await client.get("/v1/admin/tickets", headers=staff(roles=("field_maintenance",)))).status_code == 200
    response = await client.post(
        f"/v1/admin/tickets/{tid}/replies", headers=staff(roles=("field_maintenance",)), json={"text": "hi"}
    )
    assert response.status_code == 403
    assert (await client.get("/v1/admin/tickets")).status_code == 401
    response = await client.get(f"/v1/admin/tickets/{uuid.uuid4()}", headers=staff())
    assert response.status_code == 404
    assert response.json()["code"] == "ticket_not_found"
    response = await client.post(f"/v1/admin/tickets/{tid}/priority", headers=staff(), json={"priority": "meh"})
    assert response.status_code == 422


async def test_staff_search_and_filter(client, auth, staff):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    a1 = await report(client, auth(alice), kind="faulty_bank", text="no charge at all", bank_id="PB-TEST-11")
    await report(client, auth(alice), kind="abuse", text="someone kicked CAB-0002")
    b1 = await report(client, auth(bob), kind="other", text="100% unhappy_face")
    await client.post(f"/v1/admin/tickets/{a1['ticket_id']}/assign", headers=staff(), json={"assignee": "agent-2"})

    async def ids(**params: Any) -> list[str]:
        response = await client.get("/v1/admin/tickets", headers=staff(), params=params)
        assert response.status_code == 200, response.text
        return [t["ticket_id"] for t in response.json()["items"]]

    assert len(await ids()) == 3
    assert await ids(kind="faulty_bank") == [a1["ticket_id"]]
    assert await ids(bank_id="PB-TEST-11") == [a1["ticket_id"]]
    assert await ids(assignee="agent-2") == [a1["ticket_id"]]
    assert len(await ids(unassigned="true")) == 2
    assert len(await ids(status="new")) == 2
    assert len(await ids(status=["new", "assigned"])) == 3
    assert await ids(user_id=str(bob)) == [b1["ticket_id"]]
    assert await ids(q="100%") == [b1["ticket_id"]]  # LIKE wildcards are searched literally
    assert await ids(q="_") == [b1["ticket_id"]]
    assert await ids(q="NO CHARGE") == [a1["ticket_id"]]
    assert await ids(priority="high") != []
    first = (await client.get("/v1/admin/tickets", headers=staff(), params={"limit": 2})).json()
    rest = (
        await client.get("/v1/admin/tickets", headers=staff(), params={"limit": 2, "before": first["next_before"]})
    ).json()
    assert len(first["items"]) == 2 and len(rest["items"]) == 1 and rest["next_before"] is None
    response = await client.get("/v1/admin/tickets", headers=staff(), params={"before": "garbage"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"
    response = await client.get("/v1/admin/tickets", headers=staff(), params={"status": "sleeping"})
    assert response.status_code == 422


async def test_an_overdue_ticket_raises_one_alert(client, auth, staff, recorder, settings):
    user = uuid.uuid4()
    late = await report(client, auth(user), text="waited for days")
    on_time = await report(client, auth(user), text="just now")
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE tickets SET sla_due_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": late["ticket_id"]},
        )
    await engine.dispose()

    alert = await recorder.wait_for(
        lambda e: isinstance(e.data, TicketOverdue) and str(e.data.ticket_id) == late["ticket_id"],
        what="notify.ticket.overdue",
    )
    assert isinstance(alert.data, TicketOverdue)
    assert alert.data.status == "new"
    overdue = (await client.get("/v1/admin/tickets", headers=staff(), params={"overdue": "true"})).json()["items"]
    assert [t["ticket_id"] for t in overdue] == [late["ticket_id"]]
    assert overdue[0]["overdue"] is True
    assert overdue[0]["overdue_alerted_at"] is not None
    mine = (await client.get(f"/v1/tickets/{on_time['ticket_id']}", headers=auth(user))).json()
    assert mine["overdue"] is False
    # The sweeper keeps running; the alert is raised once.
    import asyncio

    await asyncio.sleep(1.5)
    alerts = [
        e for e in recorder.seen if isinstance(e.data, TicketOverdue) and str(e.data.ticket_id) == late["ticket_id"]
    ]
    assert len(alerts) == 1


async def test_a_cleared_bank_fault_is_noted_on_its_tickets_once(client, auth, bus, wait):
    user = uuid.uuid4()
    ticket = await report(client, auth(user), kind="faulty_bank", text="dead", bank_id="PB-TEST-21")
    cleared = BankFaultCleared(
        bank_id="PB-TEST-21",
        ticket_ids=[uuid.UUID(ticket["ticket_id"]), uuid.uuid4()],
        by="tech-1",
        note="replaced the cable",
        at=datetime.now(UTC),
    )
    envelope = bus.envelope(cleared, key="PB-TEST-21")
    await bus.send(envelope)
    await bus.send(envelope)

    async def system_lines() -> list[Any] | None:
        body = (await client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=auth(user))).json()
        lines = [e for e in body["entries"] if e["author"] == "system"]
        return lines or None

    lines = await wait(system_lines, what="the cleared line")
    assert lines[0]["body"] == "Power bank PB-TEST-21 was inspected by staff and cleared for lending."
    # A later event on the same key is handled after both copies above: once it shows, the duplicate was seen.
    second = await report(client, auth(user), kind="faulty_bank", text="also dead", bank_id="PB-TEST-21")
    later = cleared.model_copy(update={"ticket_ids": [uuid.UUID(second["ticket_id"])]})
    await bus.publish(later, key="PB-TEST-21")

    async def second_noted() -> bool:
        body = (await client.get(f"/v1/tickets/{second['ticket_id']}", headers=auth(user))).json()
        return any(e["author"] == "system" for e in body["entries"])

    await wait(second_noted, what="the later event")
    assert len(await system_lines() or []) == 1
