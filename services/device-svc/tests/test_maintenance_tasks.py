"""Maintenance tasks (issue 11): opened from alarms, users' fault reports, faulty slots and the
1000-cycle/health rule, at most once per device and cause and occurrence; moved by dispatchers and
field staff through one transition table; every step an event on device.maintenance.v1."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from contracts import Topic, new_event
from contracts.events import BankFaultReported, MaintenanceCause, ReportKind
from device_svc.maintenance.lifecycle import TRANSITIONS, Action, TaskTransitionNotAllowed, next_status
from device_svc.maintenance.lifecycle import S as Status
from kit.db import make_engine
from kit.testing import eventually

pytestmark = pytest.mark.integration


def staff(signer, role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(subject, kind='admin', roles=[role])}"}


async def sql(database_url: str, statement: str) -> None:
    engine = make_engine(database_url, 1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def tasks(service, headers, **params):
    resp = await service.get("/v1/ops/tasks", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def wait_task(service, headers, device_id: str, cause: str):
    async def found() -> list:
        return await tasks(service, headers, device_id=device_id, cause=cause)

    return await eventually(found, timeout=10, interval=0.05, what=f"a {cause} task for {device_id}")


async def test_tasks_open_once_per_condition_and_follow_their_lifecycle(
    service, fleet, signer, database_url, kafka_producer, tap
):
    dispatcher = staff(signer, "operator", "dispatcher-1")
    field = staff(signer, "field_maintenance", "tech-7")
    # The 1000-cycle rule (950 = 95 % of the budget), a high-temperature alarm, a slot abnormal.
    await sql(database_url, "UPDATE banks SET charge_cycles = 960, health_pct = 90 WHERE id = 'PB-000004'")
    await sql(database_url, "UPDATE banks SET health_pct = 70 WHERE id = 'PB-000005'")
    await sql(database_url, "UPDATE banks SET high_temp_alarm_at = now(), temperature_c = 65 WHERE id = 'PB-000006'")
    await sql(database_url, "UPDATE slots SET fault = 'bank_removed' WHERE cabinet_id = 'CAB-0002' AND slot_no = 3")
    # A user's fault report opens its task at once, from the consumer (sent twice: one task).
    report = BankFaultReported(
        ticket_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id="PB-000003",
        kind=ReportKind.DAMAGED_CABLE,
        cabinet_id="CAB-0001",
        at=datetime.now(UTC),
    )
    for _ in range(2):
        envelope = new_event(report, key="PB-000003", producer="notify-svc-test")
        await kafka_producer.send_and_wait(Topic.FAULT_REPORTS, envelope.to_bytes(), key=b"PB-000003")
    [reported] = await wait_task(service, dispatcher, "PB-000003", "fault_report")
    assert (reported["status"], reported["detail"]) == ("open", "reported by a user: damaged cable")

    scan = await service.post("/v1/ops/tasks/scan", headers=dispatcher)
    assert scan.status_code == 200, scan.text
    again = await service.post("/v1/ops/tasks/scan", headers=dispatcher)
    assert again.json() == {"opened": 0}
    found = {(t["device_id"], t["cause"]): t for t in await tasks(service, dispatcher, status="open")}
    assert {
        ("PB-000003", "fault_report"),
        ("PB-000004", "maintenance_due"),
        ("PB-000005", "maintenance_due"),
        ("PB-000006", "high_temperature"),
        ("CAB-0002", "slot_fault"),
    } <= set(found)
    assert len(await tasks(service, dispatcher, device_id="PB-000003")) == 1
    assert found[("PB-000004", "maintenance_due")]["detail"] == "cycles 960, health 90%"
    assert found[("CAB-0002", "slot_fault")]["detail"] == "slot 3: bank_removed"
    due = found[("PB-000004", "maintenance_due")]
    opened = await tap.wait_for("device.maintenance_task.opened", task_id=uuid.UUID(due["id"]))
    assert (opened.device_id, opened.cause) == ("PB-000004", MaintenanceCause.MAINTENANCE_DUE)

    # Field staff may not dispatch; dispatchers assign, field staff start and finish with a note.
    url = f"/v1/ops/tasks/{due['id']}"
    resp = await service.post(f"{url}/assign", json={"assignee": "tech-7"}, headers=field)
    assert resp.status_code == 403
    resp = await service.post(f"{url}/done", json={"note": "battery swapped"}, headers=field)
    assert (resp.status_code, resp.json()["code"]) == (409, "task_transition_not_allowed")
    resp = await service.post(f"{url}/assign", json={"assignee": "tech-7", "note": "on your round"}, headers=dispatcher)
    assert (resp.status_code, resp.json()["status"], resp.json()["assignee"]) == (200, "assigned", "tech-7")
    assert (await tasks(service, field, assignee="tech-7", status="assigned"))[0]["id"] == due["id"]
    resp = await service.post(f"{url}/start", json={}, headers=field)
    assert resp.json()["status"] == "in_progress"
    resp = await service.post(f"{url}/done", json={}, headers=field)
    assert resp.status_code == 422  # done needs a note
    resp = await service.post(f"{url}/done", json={"note": "battery swapped"}, headers=field)
    assert (resp.json()["status"], resp.json()["note"]) == ("done", "battery swapped")
    assert resp.json()["closed_at"] is not None
    resp = await service.post(f"{url}/cancel", json={"note": "too late"}, headers=dispatcher)
    assert resp.status_code == 409
    detail = (await service.get(url, headers=field)).json()
    assert [(h["action"], h["to_status"], h["by"], h["note"]) for h in detail["history"]] == [
        ("open", "open", "system", "cycles 960, health 90%"),
        ("assign", "assigned", "dispatcher-1", "on your round"),
        ("start", "in_progress", "tech-7", ""),
        ("done", "done", "tech-7", "battery swapped"),
    ]
    changed = await tap.wait_for("device.maintenance_task.status_changed", task_id=uuid.UUID(due["id"]), action="done")
    assert (changed.from_status, changed.to_status, changed.by, changed.note) == (
        "in_progress",
        "done",
        "tech-7",
        "battery swapped",
    )

    # The same occurrence is not raised again once closed; a new one (the alarm raised again) is.
    assert (await service.post("/v1/ops/tasks/scan", headers=dispatcher)).json() == {"opened": 0}
    await sql(database_url, "UPDATE banks SET maintenance_due_at = now() WHERE id = 'PB-000004'")
    assert (await service.post("/v1/ops/tasks/scan", headers=dispatcher)).json() == {"opened": 1}

    # Field staff take an open task themselves; a dispatcher cancels another with a reason.
    hot = found[("PB-000006", "high_temperature")]
    resp = await service.post(f"/v1/ops/tasks/{hot['id']}/start", json={"note": "nearby"}, headers=field)
    assert (resp.json()["status"], resp.json()["assignee"]) == ("in_progress", "tech-7")
    slot = found[("CAB-0002", "slot_fault")]
    resp = await service.post(f"/v1/ops/tasks/{slot['id']}/cancel", json={"note": "sensor glitch"}, headers=dispatcher)
    assert resp.json()["status"] == "cancelled"
    resp = await service.get(f"/v1/ops/tasks/{uuid.uuid4()}", headers=field)
    assert (resp.status_code, resp.json()["code"]) == (404, "maintenance_task_not_found")

    # Resolving an alarm with a note closes its open task with that note (started first if nobody had).
    overdue = found.get(("PB-000005", "maintenance_due"))
    assert overdue is not None
    resp = await service.post(
        "/v1/ops/alarms/resolve",
        json={"device_id": "PB-000005", "kind": "maintenance_due", "note": "health re-measured: 92%"},
        headers=field,
    )
    assert (resp.status_code, resp.json()["closed_tasks"]) == (200, [overdue["id"]]), resp.text
    detail = (await service.get(f"/v1/ops/tasks/{overdue['id']}", headers=field)).json()
    assert (detail["status"], detail["note"]) == ("done", "health re-measured: 92%")
    assert [(h["action"], h["by"]) for h in detail["history"]][-2:] == [("start", "tech-7"), ("done", "tech-7")]
    resp = await service.post(
        "/v1/ops/alarms/resolve", json={"device_id": "PB-000005", "kind": "maintenance_due"}, headers=field
    )
    assert resp.json()["closed_tasks"] == []  # nothing left open: the alarm alone is cleared
    analyst = staff(signer, "analyst", "an-1")
    assert (await service.get("/v1/ops/tasks", headers=analyst)).status_code == 403


def test_the_transition_table_is_the_lifecycle():
    assert next_status(Status.OPEN, Action.ASSIGN) is Status.ASSIGNED
    assert next_status(Status.ASSIGNED, Action.START) is Status.IN_PROGRESS
    assert next_status(Status.IN_PROGRESS, Action.DONE) is Status.DONE
    for closed in (Status.DONE, Status.CANCELLED):
        assert not [a for (s, a) in TRANSITIONS if s is closed]  # closed tasks stay closed
    with pytest.raises(TaskTransitionNotAllowed):
        next_status(Status.OPEN, Action.DONE)  # nobody finishes work nobody started
