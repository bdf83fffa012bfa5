"""The bank during a rental (6.1.9): the renter sees their bank's battery and, once they consent, its last
known position and when it was reported; nobody else sees it, and nothing is shown once it is returned."""

import uuid

import pytest

from contracts.mqtt import Eject
from kit.testing import eventually

pytestmark = pytest.mark.integration


def auth(signer, user_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(str(user_id))}"}


async def test_the_renter_sees_their_banks_position_with_consent_only(
    service, fleet, online, bank_device, eject, clock, tap, signer
):
    renter, other = uuid.uuid4(), uuid.uuid4()
    assert (await service.get("/v1/banks/rented-by-me", headers=auth(signer, renter))).json()[
        "code"
    ] == "no_rented_bank"
    cab = await online("CAB-0001")
    cmd = await eject("PB-000001", user_id=renter)  # PB-000001 has its own module
    down = await cab.receive()
    assert isinstance(down, Eject)
    await cab.send(
        "eject_result",
        {
            "type": "eject_result",
            "msg_id": cab.next_id(),
            "ts": clock(),
            "cmd_id": down.cmd_id,
            "result": "ok",
            "slot": down.slot,
            "bank_id": "PB-000001",
        },
    )
    await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
    bank = await bank_device("PB-000001")
    report = {
        "type": "bank_report",
        "msg_id": bank.next_id(),
        "ts": clock(),
        "battery_pct": 64,
        "position": {"lat": 22.5601, "lon": 114.0702, "accuracy_m": 10},
    }
    await bank.send("bank_report", report)

    async def reported() -> dict | None:
        found = (await service.get("/v1/banks/rented-by-me", headers=auth(signer, renter))).json()
        return found if found.get("battery_pct") == 64 else None

    mine = await eventually(reported, what="the rented bank's report")
    assert mine["bank_id"] == "PB-000001" and mine["rental_id"] == str(cmd.rental_id)
    assert mine["has_module"] is True and mine["position_consent"] is False and mine["position"] is None

    consent = await service.put(
        "/v1/banks/rented-by-me/position-consent", json={"granted": True}, headers=auth(signer, renter)
    )
    assert consent.status_code == 200 and consent.json()["granted"] is True
    mine = (await service.get("/v1/banks/rented-by-me", headers=auth(signer, renter))).json()
    assert mine["position"]["lat"] == pytest.approx(22.5601) and mine["position"]["reported_at"]
    # Nobody else: another user has no rented bank; the bank lookup shows no position.
    assert (await service.get("/v1/banks/rented-by-me", headers=auth(signer, other))).status_code == 404
    public = (await service.get("/v1/banks/PB-000001", headers=auth(signer, other))).json()
    assert "lat" not in public and "position" not in public
    # Withdrawn: hidden again.
    await service.put("/v1/banks/rented-by-me/position-consent", json={"granted": False}, headers=auth(signer, renter))
    assert (await service.get("/v1/banks/rented-by-me", headers=auth(signer, renter))).json()["position"] is None
    bad = await service.put(
        "/v1/banks/rented-by-me/position-consent", json={"granted": "maybe"}, headers=auth(signer, renter)
    )
    assert bad.status_code == 422
    # Returned: no longer the user's bank.
    await cab.send(
        "return",
        {"type": "return", "msg_id": cab.next_id(), "ts": clock(), "slot": down.slot, "bank_id": "PB-000001"},
    )
    await tap.wait_for("device.bank.returned", bank_id="PB-000001")
    assert (await service.get("/v1/banks/rented-by-me", headers=auth(signer, renter))).status_code == 404
