"""Scriptable, reproducible scenarios: timed steps acting on a fleet's cabinets and bank modules.

A scenario is JSON (`Scenario`): `{"seed": 7, "steps": [{"at_s": 0.5, "device": "PB-000001",
"action": "move", "args": {"lat": 22.55, "lon": 114.06}}, ...]}`. `generate(seed, ...)` draws a
random one from a seed (the same seed, the same steps); `run(fleet, scenario)` plays it and returns
what was done. Actions: cabinets `faults` (stuck_motor, drop_acks, silent, clock_skew_ms, drop_messages,
duplicate, delay_s), `offline`, `online`, `return` (bank_id, slot, battery_pct, ts_offset_ms,
repeat), `inventory`; bank modules
`faults` (drop_messages, duplicate, delay_s, clock_skew_ms, battery_pct, temperature_c,
charge_cycles, health_pct), `offline`, `online`, `move` (lat, lon), `report`, `use` (pct),
`charge` (pct).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.mqtt import DeviceId
from device_emulator.bank import BankModule
from device_emulator.cabinet import Cabinet
from device_emulator.fleet import Fleet

log = logging.getLogger("device_emulator.scenario")

Action = Literal["faults", "offline", "online", "return", "inventory", "move", "report", "use", "charge"]
CABINET_ACTIONS = frozenset({"faults", "offline", "online", "return", "inventory"})
BANK_ACTIONS = frozenset({"faults", "offline", "online", "move", "report", "use", "charge"})


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at_s: float = Field(ge=0)
    device: DeviceId
    action: Action
    args: dict[str, Any] = Field(default_factory=dict)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    steps: list[Step] = Field(default_factory=list)


def generate(
    seed: int,
    cabinets: list[str],
    banks: list[str],
    *,
    duration_s: float = 60.0,
    events: int = 20,
    origin: tuple[float, float] = (22.54, 114.05),
) -> Scenario:
    """A random scenario from `seed`: faults switched on and off, devices dropping off and coming
    back, banks moved, heated, drained and aged. Reproducible: same arguments, same steps."""
    rng = random.Random(seed)
    steps: list[Step] = []
    for _ in range(events):
        at = round(rng.uniform(0, duration_s), 3)
        if banks and (not cabinets or rng.random() < 0.5):
            device = rng.choice(sorted(banks))
            kind = rng.choice(["move", "report", "offline", "faults", "faults", "use"])
            if kind == "move":
                args: dict[str, Any] = {
                    "lat": round(origin[0] + rng.uniform(-0.01, 0.01), 6),
                    "lon": round(origin[1] + rng.uniform(-0.01, 0.01), 6),
                }
            elif kind == "faults":
                args = rng.choice(
                    [
                        {"duplicate": rng.randint(2, 3)},
                        {"delay_s": round(rng.uniform(0.5, 3.0), 2)},
                        {"drop_messages": True},
                        {"clock_skew_ms": rng.choice([-1, 1]) * rng.randint(60_000, 3_600_000)},
                        {"temperature_c": round(rng.uniform(61, 75), 1)},
                        {"battery_pct": rng.randint(1, 15)},
                        {"charge_cycles": rng.randint(950, 1100)},
                    ]
                )
            elif kind == "use":
                args = {"pct": rng.randint(5, 60)}
            else:
                args = {}
        else:
            device = rng.choice(sorted(cabinets))
            kind = rng.choice(["faults", "faults", "offline", "inventory"])
            if kind == "faults":
                args = rng.choice(
                    [
                        {"stuck_motor": True},
                        {"drop_acks": True},
                        {"silent": True},
                        {"duplicate": rng.randint(2, 3)},
                        {"delay_s": round(rng.uniform(0.5, 3.0), 2)},
                        {"clock_skew_ms": rng.choice([-1, 1]) * rng.randint(60_000, 86_400_000)},
                    ]
                )
            else:
                args = {}
        steps.append(Step(at_s=at, device=device, action=kind, args=args))
        if kind == "offline":  # every outage ends
            back = round(min(at + rng.uniform(1, 10), duration_s), 3)
            steps.append(Step(at_s=back, device=device, action="online"))
        elif kind == "faults" and not ("temperature_c" in args or "battery_pct" in args or "charge_cycles" in args):
            clear = {
                k: (0 if k == "clock_skew_ms" else 1 if k == "duplicate" else 0.0 if k == "delay_s" else False)
                for k in args
            }
            steps.append(
                Step(
                    at_s=round(min(at + rng.uniform(1, 10), duration_s), 3), device=device, action="faults", args=clear
                )
            )
    steps.sort(key=lambda s: (s.at_s, s.device, s.action))
    return Scenario(seed=seed, steps=steps)


async def apply(fleet: Fleet, step: Step) -> Any:
    """Do one step now; returns what the device answered (a msg_id, its description, ...)."""
    cabinet = fleet.get(step.device)
    if cabinet is not None:
        return await _on_cabinet(cabinet, step)
    bank = fleet.banks.get(step.device)
    if bank is not None:
        return await _on_bank(bank, step)
    raise KeyError(f"no device {step.device} in the fleet")


async def _on_cabinet(cabinet: Cabinet, step: Step) -> Any:
    if step.action not in CABINET_ACTIONS:
        raise ValueError(f"a cabinet cannot {step.action}")
    if step.action == "faults":
        cabinet.set_faults(**step.args)
        return None
    if step.action == "offline":
        await cabinet.go_offline()
        return None
    if step.action == "online":
        return await cabinet.go_online(wait=False)
    if step.action == "return":
        return await cabinet.return_bank(**step.args)
    return await cabinet.publish_inventory()


async def _on_bank(bank: BankModule, step: Step) -> Any:
    if step.action not in BANK_ACTIONS:
        raise ValueError(f"a bank cannot {step.action}")
    if step.action == "faults":
        bank.set_faults(**step.args)
        return None
    if step.action == "offline":
        await bank.go_offline()
        return None
    if step.action == "online":
        return await bank.go_online(wait=False)
    if step.action == "move":
        return await bank.move_to(float(step.args["lat"]), float(step.args["lon"]))
    if step.action == "use":
        bank.use(int(step.args["pct"]))
        return await bank.report()
    if step.action == "charge":
        bank.charge(int(step.args["pct"]))
        return await bank.report()
    return await bank.report()


async def run(fleet: Fleet, scenario: Scenario, *, speed: float = 1.0) -> list[dict[str, Any]]:
    """Play the steps in time order (`speed` 2.0: twice as fast). A failing step is logged and
    recorded; the scenario goes on."""
    done: list[dict[str, Any]] = []
    start = time.monotonic()
    for step in sorted(scenario.steps, key=lambda s: s.at_s):
        wait = step.at_s / speed - (time.monotonic() - start)
        if wait > 0:
            await asyncio.sleep(wait)
        record: dict[str, Any] = step.model_dump()
        try:
            record["result"] = await apply(fleet, step)
            record["ok"] = True
        except Exception as exc:
            record["ok"], record["error"] = False, repr(exc)
            log.warning("scenario step failed", extra={"device_id": step.device, "action": step.action})
        done.append(record)
    return done
