"""Borrow and return through a cabinet of another maker speaking the volinks protocol: device-svc
translates it at the edge (docs/vendors.md), so billing, payment and the inbox work as with the
platform's own cabinets."""

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mesh import Mesh, run_stack
from platform_client import PlatformClient, wait_for

from device_emulator import VolinksCabinet
from device_emulator.tls import client_context

pytestmark = pytest.mark.e2e

UNLOCK_BUDGET_MS = 5000


async def test_borrow_and_return_through_a_volinks_cabinet(mesh: Mesh, user: PlatformClient) -> None:
    run_stack("seed", "--", "--cabinets", "3", "--slots", "8", "--volinks", "1")
    fleet = json.loads(await asyncio.to_thread(Path(os.environ["PB_FLEET_FILE"]).read_text))
    entry = next(c for c in fleet["cabinets"] if c["cabinet_id"] == "VL-CAB-0001")
    broker = fleet["broker"]
    cabinet = VolinksCabinet(
        "VL-CAB-0001",
        entry["password"],
        broker["host"],
        broker["port"],
        entry["slots"],
        slot_count=entry["slot_count"],
        tls=client_context(broker["ca_file"]),
    )
    await cabinet.start()
    try:
        assert await cabinet.wait_online(10)

        async def online() -> dict[str, Any] | None:
            found = [c for c in await user.cabinets() if c["id"] == "VL-CAB-0001" and c["online"]]
            return found[0] if found and found[0]["banks_available"] > 0 else None

        await wait_for(online, timeout_s=20)
        start_balance = (await user.wallet())["balance_fen"]
        borrowed = await user.borrow("VL-CAB-0001")
        assert borrowed.status == 201, borrowed.response.text
        assert borrowed.ms < UNLOCK_BUDGET_MS
        rental = borrowed.json()
        assert rental["state"] == "active" and rental["bank_id"].startswith("VL-")
        assert cabinet.commands[-1].cmd == "popup_sn"
        assert cabinet.slot_of(rental["bank_id"]) is None  # it left the cabinet

        await asyncio.sleep(1.1)  # durations count whole seconds; a 0-second rental is free
        await cabinet.return_bank(rental["bank_id"])

        async def settled() -> dict[str, Any] | None:
            r = await user.rental(rental["rental_id"])
            return r if r["state"] == "settled" else None

        ended, _ = await wait_for(settled, timeout_s=30)
        assert ended["fee_fen"] == 150
        assert (await user.wallet())["balance_fen"] == start_balance - 150
    finally:
        await cabinet.stop()
