"""A user's fault report about a bank (notify-svc's `notify.bank.fault_reported`) keeps the bank from
being lent, by its own code or picked from its cabinet, and makes it a maintenance task, until staff
clear it; clearing tells notify-svc (`device.bank.fault_cleared`)."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from contracts import Topic, new_event
from contracts.events import BankFaultReported, EjectFailureReason, ReportKind

pytestmark = pytest.mark.integration

OPS = {"kind": "admin", "roles": ["operator"]}


def auth(signer, **kwargs):
    return {"Authorization": f"Bearer {signer.issue('ops-7', **kwargs)}"}


async def publish_report(producer, bank_id: str, ticket_id: uuid.UUID | None = None):
    data = BankFaultReported(
        ticket_id=ticket_id or uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id=bank_id,
        kind=ReportKind.FAULTY_BANK,
        cabinet_id="CAB-0001",
        at=datetime.now(UTC),
    )
    envelope = new_event(data, key=bank_id, producer="notify-svc-test")
    await producer.send_and_wait(Topic.FAULT_REPORTS, envelope.to_bytes(), key=bank_id.encode())
    return envelope


async def open_reports(service, signer, bank_id):
    resp = await service.get("/v1/ops/fault-reports", params={"bank_id": bank_id}, headers=auth(signer, **OPS))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def wait_reports(service, signer, bank_id, n):
    for _ in range(200):
        items = await open_reports(service, signer, bank_id)
        if len(items) >= n:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"{n} fault reports about {bank_id} never arrived")


async def test_a_reported_bank_is_not_lent_until_staff_clear_it(
    service, fleet, online, tap, eject, kafka_producer, signer
):
    cab = await online("CAB-0001")
    report = await publish_report(kafka_producer, "PB-000001")
    await kafka_producer.send_and_wait(
        Topic.FAULT_REPORTS, report.to_bytes(), key=b"PB-000001"
    )  # redelivered: still one report
    items = await wait_reports(service, signer, "PB-000001", 1)
    assert [i["ticket_id"] for i in items] == [str(report.data.ticket_id)]  # type: ignore[union-attr]

    cmd = await eject("PB-000001")
    failed = await tap.wait_for("device.eject.failed", command_id=cmd.command_id)
    assert failed.reason == EjectFailureReason.BANK_FAULTY
    assert "reported" in failed.detail
    with pytest.raises(TimeoutError):
        await cab.receive(timeout=0.3)  # nothing was sent to the cabinet

    detail = (await service.get("/v1/cabinets/CAB-0001", headers=auth(signer, **OPS))).json()
    slot = next(s for s in detail["slots"] if s["bank_id"] == "PB-000001")
    assert slot["rentable"] is False
    tasks = (await service.get("/v1/ops/maintenance-tasks", headers=auth(signer, **OPS))).json()["items"]
    assert any(t["device_id"] == "PB-000001" and "reported faulty by a user" in t["task"] for t in tasks)

    by_cabinet = await eject("CAB-0001")
    picked = await cab.receive()
    assert picked.cmd_id == str(by_cabinet.command_id)
    assert picked.bank_id != "PB-000001"

    second = await publish_report(kafka_producer, "PB-000001")
    await wait_reports(service, signer, "PB-000001", 2)
    resp = await service.post(
        "/v1/ops/banks/PB-000001/fault-reports/clear",
        json={"note": "cable replaced"},
        headers=auth(signer, kind="admin", roles=["field_maintenance"]),
    )
    assert resp.status_code == 200, resp.text
    assert sorted(resp.json()["ticket_ids"]) == sorted(
        [str(report.data.ticket_id), str(second.data.ticket_id)]  # type: ignore[union-attr]
    )
    cleared = await tap.wait_for("device.bank.fault_cleared", bank_id="PB-000001")
    assert (cleared.by, cleared.note) == ("ops-7", "cable replaced")
    assert await open_reports(service, signer, "PB-000001") == []

    again = await eject("PB-000001")
    sent = await cab.receive()
    assert (sent.cmd_id, sent.bank_id) == (str(again.command_id), "PB-000001")


async def test_clearing_answers_problems(service, fleet, signer):
    headers = auth(signer, **OPS)
    resp = await service.post("/v1/ops/banks/PB-000003/fault-reports/clear", json={}, headers=headers)
    assert resp.status_code == 409
    assert resp.json()["code"] == "no_open_fault_report"
    resp = await service.post("/v1/ops/banks/NOPE/fault-reports/clear", json={}, headers=headers)
    assert resp.status_code == 404
    assert resp.json()["code"] == "bank_not_found"
    resp = await service.post("/v1/ops/banks/PB-000003/fault-reports/clear", json={"note": "x" * 501}, headers=headers)
    assert resp.status_code == 422
    analyst = auth(signer, kind="admin", roles=["analyst"])
    resp = await service.post("/v1/ops/banks/PB-000003/fault-reports/clear", json={}, headers=analyst)
    assert resp.status_code == 403
    assert (await service.get("/v1/ops/fault-reports", headers=analyst)).status_code == 403


async def test_a_report_about_an_unknown_bank_is_kept(service, fleet, kafka_producer, signer):
    await publish_report(kafka_producer, "PB-999999")
    items = await wait_reports(service, signer, "PB-999999", 1)
    assert items[0]["bank_id"] == "PB-999999"
