"""Staff eject a bank for maintenance (issue 16): an ordinary eject towards the cabinet with no rental; the
cabinet's ok takes the bank out of its slot into maintenance (held), the reason in its transitions and on
the audit trail; billing hears nothing. Refused at once when it cannot be sent."""

import uuid

import pytest

from kit.testing import eventually, staff_actions

pytestmark = pytest.mark.integration

OPS = {"kind": "admin", "roles": ["operator"]}


async def test_a_bank_ejected_for_maintenance_leaves_its_slot_held(
    service, online, tap, clock, signer, database_url
) -> None:
    ops = {"Authorization": f"Bearer {signer.issue('ops-eject', **OPS)}"}
    url = "/v1/ops/banks/PB-000003/eject"
    offline = await service.post(url, json={"reason": "cracked case"}, headers=ops)
    assert (offline.status_code, offline.json()["code"]) == (409, "device_offline")
    cab = await online("CAB-0001")
    analyst = {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()), kind='admin', roles=['analyst'])}"}
    assert (await service.post(url, json={"reason": "x"}, headers=analyst)).status_code == 403
    assert (await service.post(url, json={"reason": ""}, headers=ops)).status_code == 422

    accepted = await service.post(url, json={"reason": "cracked case"}, headers=ops)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert (body["type"], body["device_id"]) == ("eject", "CAB-0001")
    again = await service.post(url, json={"reason": "cracked case"}, headers=ops)
    assert (again.status_code, again.json()["code"]) == (409, "eject_pending")

    command = await cab.receive()
    assert (command.type, command.bank_id, command.slot, command.cmd_id) == (
        "eject",
        "PB-000003",
        body["slot"],
        body["cmd_id"],
    )
    result = {"type": "eject_result", "msg_id": cab.next_id(), "ts": clock(), "cmd_id": command.cmd_id}
    await cab.send("eject_result", result | {"result": "ok"})

    async def in_maintenance() -> bool:
        bank = (await service.get("/v1/ops/banks", params={"state": "maintenance"}, headers=ops)).json()["items"]
        return any(b["id"] == "PB-000003" and b["cabinet_id"] is None for b in bank)

    await eventually(in_maintenance, what="the bank in maintenance, out of its slot")
    transitions = (await service.get("/v1/ops/banks/PB-000003/transitions", headers=ops)).json()["items"]
    assert transitions[-1]["to_state"] == "maintenance"
    assert "cracked case" in transitions[-1]["reason"] and "ops-eject" in transitions[-1]["reason"]
    cabinet = (await service.get("/v1/cabinets/CAB-0001", headers=ops)).json()
    assert all(s.get("bank_id") != "PB-000003" for s in cabinet["slots"])
    [audit] = await staff_actions(database_url, "bank.eject_for_maintenance")
    assert (audit.target_id, audit.reason, audit.details["slot"]) == ("PB-000003", "cracked case", body["slot"])
    # No rental: billing is told nothing.
    assert not tap.matching("device.bank.ejected", command_id=uuid.UUID(body["cmd_id"]))
    gone = await service.post(url, json={"reason": "again"}, headers=ops)
    assert (gone.status_code, gone.json()["code"]) == (409, "bank_not_in_cabinet")
