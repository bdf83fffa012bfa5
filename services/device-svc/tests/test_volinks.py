"""The volinks adapter (protocols/volinks.py): the decoder against the frames printed in the maker's
documentation, the adapter contract kit, and a volinks cabinet (device_emulator.VolinksCabinet) on the
real broker with its own credential: online, eject, return, a malformed frame refused and counted."""

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from contracts.vendors import volinks as v
from device_emulator import VolinksCabinet
from device_svc.models import Slot
from device_svc.protocols.registry import ADAPTERS
from device_svc.protocols.testkit import Samples, check_adapter
from device_svc.provisioning.seed import seed
from kit.db import make_engine, make_sessionmaker
from kit.testing import eventually, truncate_all

# Frames from the documentation's pages (check, heartbeat, pop-up by position, pop-up by SN).
DOC_STATUS = (
    "A8 00 89 10 01 FF FF 00 04 16 01 01 00 EC 00 05 11 49 F1 64 1F 32 01 0D 00 02 00 00 00 00 00 00 00 00 00 00 00 "
    "00 00 80 03 01 00 E8 00 05 11 46 AC 64 20 32 00 0D 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 80 02 FF FF 00 "
    "04 16 05 01 00 D7 00 04 C6 F0 96 64 1F 32 00 1A 00 06 00 00 00 00 00 00 00 00 00 00 00 00 00 80 07 01 00 E9 00 "
    "05 11 49 DB 64 1E 32 00 0D 00 08 00 00 00 00 00 00 00 00 00 00 00 00 00 80 D8"
)
DOC_HEART = "A8 00 11 7A 10 43 53 51 3A 32 37 3B 42 50 3A 30 FC"
DOC_POPUP_SLOT = "A8 00 09 21 10 01 01 02 1A"
DOC_POPUP_SN = "A8 00 0C 31 60 00 9B D2 10 01 00 3B"  # its check code is wrong (0x3D would be right)


def frame(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_the_documented_frames_decode_and_encode_back():
    status = v.decode(frame(DOC_STATUS))
    assert isinstance(status, v.StatusFrame) and len(status.boards) == 2
    assert [(h.hole, h.sn, h.soc) for h in status.holes if h.state == 1] == [
        (1, 85019121, 100),
        (3, 85018284, 100),
        (5, 80146582, 100),
        (7, 85019099, 100),
    ]
    assert v.encode(status) == frame(DOC_STATUS)
    heart = v.decode(frame(DOC_HEART))
    assert isinstance(heart, v.HeartbeatFrame) and heart.csq == 27 and heart.rssi_dbm == -59
    assert v.decode(frame(DOC_POPUP_SLOT)) == v.PopupSlotFrame(board=0x10, hole=1, state=1, valve=2)
    # The hexadecimal text the documentation prints is the same frame.
    assert v.decode(DOC_HEART.replace(" ", "").encode()) == heart


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (frame(DOC_POPUP_SN), "bad_check_code"),
        (b"", "truncated"),
        (b"\xa8\x00\x05", "truncated"),
        (frame("A9 00 09 21 10 01 01 02 19"), "bad_head"),
        (frame("A8 00 0A 21 10 01 01 02 19"), "bad_length"),
        (frame("A8 00 05 55 FE"), "unknown_command"),
        (frame("A8 00 0A 21 10 01 01 02 00 19"), "bad_layout"),
        (b"A8 00 09", "bad_head"),  # spaced text is neither binary nor plain hex
        (v.encode(v.HeartbeatFrame(board=1, signal="CSQ:40", csq=40, backup_power=None)), "bad_field"),
    ],
)
def test_the_decoder_is_strict(payload, reason):
    with pytest.raises(v.FrameError) as refused:
        v.decode(payload)
    assert refused.value.reason == reason


def test_bank_ids_and_commands():
    assert v.bank_id_of(10211856) == "VL-10211856" and v.sn_of("VL-10211856") == 10211856
    assert v.sn_of("PB-000001") is None and v.sn_of("VL-0") is None and v.sn_of("VL-007") is None
    command = v.VolinksCommand.model_validate_json(v.command_bytes(v.popup_sn(10211856, 1759941810, 30)))
    assert command.model_dump(exclude_none=True) == {
        "cmd": "popup_sn",
        "data": "10211856",
        "timestamp": "1759941810",
        "ttl": "30",
    }


async def test_the_volinks_adapter_passes_the_contract_kit():
    device = "VL-CAB-9"
    bank = v.bank_id_of(85019121)
    await check_adapter(
        ADAPTERS["volinks"],
        Samples(
            device_id=device,
            heartbeat=(v.heart_topic(device), frame(DOC_HEART)),
            status=(v.update_topic(device), frame(DOC_STATUS)),
            eject_ok=(v.update_topic(device), v.encode(v.PopupSnFrame(hole=1, sn=85019121, state=1, valve=6))),
            ejected_bank=bank,
            returned=(
                v.update_topic(device),
                v.encode(v.ReturnFrame(board=1, hole=1, area=0, sn=85019121, state=1, bank_version=13, soc=77)),
            ),
            returned_bank=bank,
            malformed=[(v.heart_topic(device), frame(DOC_STATUS)), (v.update_topic(device), frame(DOC_HEART))],
        ),
    )


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("pb_device_messages_rejected_total", {"reason": reason}) or 0.0


@pytest.fixture
async def mixed_fleet(database_url, broker, tmp_path: Path, tap) -> dict[str, Any]:
    """Two cabinets of the platform's own and one volinks cabinet (VL-CAB-0001, banks VL-<sn>)."""
    await truncate_all(database_url)
    tap.mark = len(tap.events)
    engine = make_engine(database_url, 2)
    try:
        result = await seed(
            make_sessionmaker(engine),
            cabinets=2,
            slots=8,
            fleet_out=tmp_path / "fleet.json",
            broker=broker.target(),
            volinks_cabinets=1,
        )
    finally:
        await engine.dispose()
    await broker.knows(result.fleet)
    return result.fleet


@pytest.mark.integration
async def test_borrow_and_return_through_a_volinks_cabinet(running_service, mixed_fleet, broker, tap, eject):
    entry = next(c for c in mixed_fleet["cabinets"] if c["cabinet_id"] == "VL-CAB-0001")
    assert entry["protocol"] == "volinks"
    bank = entry["slots"][0]["bank_id"]
    assert bank.startswith("VL-")
    cab = VolinksCabinet(
        "VL-CAB-0001", entry["password"], broker.host, broker.port, entry["slots"], slot_count=8, tls=broker.tls
    )
    await cab.start()
    try:
        assert await cab.wait_online(10)
        await tap.wait_for("device.presence.changed", device_id="VL-CAB-0001", online=True)

        cmd = await eject(bank)
        ejected = await tap.wait_for("device.bank.ejected", command_id=cmd.command_id)
        assert ejected.bank_id == bank and ejected.cabinet_id == "VL-CAB-0001"
        sent = cab.commands[-1]
        assert sent.cmd == "popup_sn" and sent.data == bank.removeprefix("VL-") and sent.ttl is not None

        await cab.return_bank(bank, slot=8, battery_pct=55)
        returned = await tap.wait_for("device.bank.returned", bank_id=bank)
        assert returned.cabinet_id == "VL-CAB-0001" and returned.slot == 8 and returned.battery_pct == 55

        # A frame with a broken check code is refused, counted and changes nothing.
        before = rejected("malformed_frame")
        await cab.send_raw(frame(DOC_POPUP_SN))

        async def counted() -> bool:
            return rejected("malformed_frame") > before

        await eventually(counted, timeout=10, what="the malformed frame counted")
        await tap.wait_for("device.message.rejected", device_id="VL-CAB-0001", reason="malformed_frame")
    finally:
        await cab.stop()


@pytest.mark.integration
async def test_a_cabinet_of_the_platform_cannot_speak_volinks_nor_for_another(
    running_service, mixed_fleet, broker, tap
):
    native = next(c for c in mixed_fleet["cabinets"] if c["cabinet_id"] == "CAB-0001")
    before = rejected("protocol_mismatch")
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        tls_context=broker.tls,
        username="CAB-0001",
        password=native["password"],
        identifier="CAB-0001",
    ) as client:
        # Its own volinks topic reaches device-svc, which knows CAB-0001 speaks the platform's protocol.
        await client.publish(v.heart_topic("CAB-0001"), frame(DOC_HEART), qos=1)
        # Another cabinet's topic: the broker drops it (the ACL names the user's own id only).
        await client.publish(v.update_topic("VL-CAB-0001"), frame(DOC_STATUS), qos=1)

    async def mismatch() -> bool:
        return rejected("protocol_mismatch") > before

    await eventually(mismatch, timeout=10, what="the protocol mismatch counted")
    # Deliberate: an absence has no condition to wait for; the heart frame sent first is already handled.
    await asyncio.sleep(0.5)
    assert not tap.matching("device.presence.changed", device_id="VL-CAB-0001")


@pytest.mark.integration
async def test_a_silent_volinks_cabinet_is_asked_check_and_its_slots_are_applied(
    running_service, broker, tap, database_url, tmp_path: Path
):
    """A cabinet that does not upload its 0x10 on connect (decision 9) is asked `check` on its first frame
    (VL-CAB-0002: this device-svc has not heard from it yet); its answer replaces what the registry knew:
    here a bank taken while it was away."""
    await truncate_all(database_url)
    engine = make_engine(database_url, 2)
    try:
        fleet = await seed(
            make_sessionmaker(engine),
            cabinets=1,
            slots=8,
            fleet_out=tmp_path / "fleet.json",
            broker=broker.target(),
            volinks_cabinets=2,
        )
    finally:
        await engine.dispose()
    await broker.knows(fleet.fleet)
    entry = next(c for c in fleet.fleet["cabinets"] if c["cabinet_id"] == "VL-CAB-0002")
    gone = entry["slots"][0]
    assert gone["bank_id"] is not None
    slots = [{**s, "bank_id": None} if s["slot"] == gone["slot"] else s for s in entry["slots"]]
    cab = VolinksCabinet(
        "VL-CAB-0002",
        entry["password"],
        broker.host,
        broker.port,
        slots,
        slot_count=8,
        tls=broker.tls,
        heartbeat_s=0.3,
        announce_on_connect=False,
    )
    await cab.start()
    engine = make_engine(database_url, 1)
    try:
        assert await cab.wait_online(10)

        async def asked() -> bool:
            return any(c.cmd == "check" for c in cab.commands)

        await eventually(asked, timeout=10, what="device-svc asks the cabinet `check`")

        async def applied() -> bool:
            async with make_sessionmaker(engine)() as session:
                bank = (
                    await session.execute(
                        select(Slot.bank_id).where(Slot.cabinet_id == "VL-CAB-0002", Slot.slot_no == gone["slot"])
                    )
                ).scalar_one()
            return bank is None

        await eventually(applied, timeout=10, what="the answer's slots in the registry")
        # Heard from again within its offline period: asked once, not at every heartbeat.
        sent = len(cab.raw_sent)

        async def three_more_frames() -> bool:
            return len(cab.raw_sent) >= sent + 3

        await eventually(three_more_frames, timeout=10, what="three more heartbeats")
        assert sum(c.cmd == "check" for c in cab.commands) == 1
    finally:
        await engine.dispose()
        await cab.stop()
