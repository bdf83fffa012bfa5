"""A bank sold to its user (billing's `billing.rental.ended` with `purchased`) is marked lost in the fleet;
if it comes back, the cabinet's return puts it in service again and billing is told as for any return."""

import uuid
from datetime import UTC, datetime

import pytest

from contracts import Topic, new_event
from contracts.events import RentalEnded
from kit.testing import eventually

pytestmark = pytest.mark.integration

OPS = {"kind": "admin", "roles": ["operator"]}


async def rent(cab, eject, tap, clock, bank_id):
    cmd = await eject(bank_id)
    command = await cab.receive()
    await cab.send(
        "eject_result",
        {"type": "eject_result", "msg_id": cab.next_id(), "ts": clock(), "cmd_id": command.cmd_id, "result": "ok"},
    )
    return await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)


async def ended(producer, bank_id: str, *, purchased: bool) -> None:
    now = datetime.now(UTC)
    data = RentalEnded(
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id=bank_id,
        start_cabinet_id="CAB-0001",
        return_cabinet_id="",
        started_at=now,
        ended_at=now,
        duration_seconds=0,
        fee_fen=9900,
        purchased=purchased,
    )
    envelope = new_event(data, key=str(data.rental_id), producer="billing-svc-test")
    await producer.send_and_wait(Topic.RENTALS, envelope.to_bytes(), key=str(data.rental_id).encode())


async def test_a_purchased_bank_is_lost_until_it_comes_back(
    service, online, eject, tap, clock, kafka_producer, signer
) -> None:
    ops = {"Authorization": f"Bearer {signer.issue('ops-1', **OPS)}"}
    user = {"Authorization": f"Bearer {signer.issue(str(uuid.uuid4()))}"}
    cab = await online("CAB-0001")
    await rent(cab, eject, tap, clock, "PB-000001")
    await rent(cab, eject, tap, clock, "PB-000003")
    await ended(kafka_producer, "PB-000003", purchased=False)  # an ordinary end changes nothing here
    await ended(kafka_producer, "PB-000001", purchased=True)

    async def state(bank_id: str) -> str:
        response = await service.get(f"/v1/banks/{bank_id}", headers=user)
        assert response.status_code == 200, response.text
        return str(response.json()["state"])

    async def lost() -> bool:
        return await state("PB-000001") == "lost"

    await eventually(lost, what="the purchased bank marked lost")
    assert await state("PB-000003") == "rented"
    transitions = (await service.get("/v1/ops/banks/PB-000001/transitions", headers=ops)).json()["items"]
    assert any(t["to_state"] == "lost" and "purchase ceiling" in (t["reason"] or "") for t in transitions)

    msg = {"type": "return", "msg_id": cab.next_id(), "ts": clock(), "slot": 7, "bank_id": "PB-000001"}
    await cab.send("return", msg)
    assert (await cab.receive()).result == "ok"
    await tap.wait_for("device.bank.returned", bank_id="PB-000001")
    assert await state("PB-000001") == "in_cabinet"
