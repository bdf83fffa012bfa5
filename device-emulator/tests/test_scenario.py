"""Scenarios: drawn reproducibly from a seed, scriptable as JSON, played against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys

from contracts.mqtt import UpChannel
from device_emulator import BankModule, Fleet
from device_emulator.scenario import Scenario, Step, generate, run


def password(device_id: str) -> str:
    return f"pw-{device_id}"  # as conftest's broker has it for every id of the pool


def test_generated_scenarios_are_reproducible_from_the_seed():
    cabinets, banks = ["CAB-1", "CAB-2"], ["PB-1", "PB-2", "PB-3"]
    a = generate(42, cabinets, banks, duration_s=30, events=25)
    assert a == generate(42, cabinets, banks, duration_s=30, events=25)
    assert a != generate(43, cabinets, banks, duration_s=30, events=25)
    assert [s.at_s for s in a.steps] == sorted(s.at_s for s in a.steps)
    assert all(s.at_s <= 30 for s in a.steps)
    # Every outage ends, and the plan survives a JSON round trip.
    for step in a.steps:
        if step.action == "offline":
            assert any(s.device == step.device and s.action == "online" and s.at_s >= step.at_s for s in a.steps)
    assert Scenario.model_validate_json(a.model_dump_json()) == a


async def test_a_scripted_scenario_acts_on_cabinets_and_banks(make_cabinet, broker, new_cabinet_id, svc_session):
    cab = make_cabinet()
    bank_id = new_cabinet_id()
    bank = BankModule(bank_id, password(bank_id), broker.host, broker.port, lat=1.0, lon=2.0, heartbeat_s=60)
    fleet = Fleet([cab], [bank])
    script = Scenario(
        seed=1,
        steps=[
            Step(at_s=0.0, device=cab.cabinet_id, action="faults", args={"stuck_motor": True}),
            Step(at_s=0.05, device=bank_id, action="move", args={"lat": 1.5, "lon": 2.5}),
            Step(at_s=0.1, device=bank_id, action="faults", args={"duplicate": 2}),
            Step(at_s=0.15, device=bank_id, action="use", args={"pct": 30}),
            Step(at_s=0.2, device=cab.cabinet_id, action="inventory"),
            Step(at_s=0.25, device=cab.cabinet_id, action="move", args={"lat": 0, "lon": 0}),  # not a cabinet's
        ],
    )
    async with svc_session() as svc:
        assert await fleet.start_all(timeout_s=10)
        try:
            done = await run(fleet, script, speed=2.0)
            await svc.wait_for(bank_id, UpChannel.BANK_REPORT, lambda m: m.moving and m.position.lat == 1.5)
            used = await svc.wait_for(bank_id, UpChannel.BANK_REPORT, lambda m: m.battery_pct == 60, count=2)
            assert used[0].raw == used[1].raw  # duplicated
            await svc.wait_for(cab.cabinet_id, UpChannel.INVENTORY)
        finally:
            await fleet.stop_all()
    assert cab.faults.stuck_motor
    assert [r["ok"] for r in done] == [True, True, True, True, True, False]
    assert "cannot move" in done[-1]["error"]


def test_cli_prints_a_seeded_scenario(tmp_path, write_fleet, new_cabinet_id):
    path = write_fleet(tmp_path / "fleet.json", [new_cabinet_id()])
    cmd = [sys.executable, "-m", "device_emulator", "scenario", "--fleet", str(path), "--seed", "5", "--print-only"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    assert first == second
    assert json.loads(first)["seed"] == 5
