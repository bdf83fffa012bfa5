"""A fleet of emulated cabinets (and banks with their own module, when the fleet file lists them),
read from the fleet.json device-svc's seeder writes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.mqtt import DeviceId, Percent, SlotNo, SlotState
from device_emulator.bank import BankModule
from device_emulator.cabinet import Cabinet
from device_emulator.tls import client_context
from device_emulator.volinks import VolinksCabinet

log = logging.getLogger("device_emulator.fleet")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BrokerSpec(_Spec):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # The CA the broker's certificate is verified against; unset: clear text.
    ca_file: str | None = None


class SlotSpec(_Spec):
    slot: SlotNo
    bank_id: DeviceId | None = None
    battery_pct: Percent | None = None


class CabinetSpec(_Spec):
    cabinet_id: DeviceId
    password: str
    lat: float | None = None
    lon: float | None = None
    slot_count: int | None = Field(default=None, ge=1, le=256)
    firmware: str = "emu-1.0"
    slots: list[SlotSpec] = Field(default_factory=list)
    protocol: Literal["native", "volinks"] = "native"


class BankModuleSpec(_Spec):
    """A bank with its own module: its credential, and the cabinet it starts in (for its position)."""

    bank_id: DeviceId
    password: str
    cabinet_id: DeviceId | None = None
    lat: float | None = None
    lon: float | None = None


class FleetSpec(_Spec):
    broker: BrokerSpec = Field(default_factory=BrokerSpec)
    cabinets: list[CabinetSpec]
    banks: list[BankModuleSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BankLocation:
    bank_id: str
    cabinet_id: str
    state: Literal["in_slot", "out"]
    slot: int | None = None
    battery_pct: int | None = None


class Fleet:
    """Cabinets by id. `start_all()` starts one task per cabinet; `stop_all()` shuts them down cleanly."""

    def __init__(self, cabinets: Iterable[Cabinet], banks: Iterable[BankModule] = ()) -> None:
        self.cabinets: dict[str, Cabinet] = {}
        for cabinet in cabinets:
            if cabinet.cabinet_id in self.cabinets:
                raise ValueError(f"duplicate cabinet id {cabinet.cabinet_id}")
            self.cabinets[cabinet.cabinet_id] = cabinet
        self.banks: dict[str, BankModule] = {}
        for bank in banks:
            if bank.bank_id in self.banks:
                raise ValueError(f"duplicate bank id {bank.bank_id}")
            self.banks[bank.bank_id] = bank

    @classmethod
    def from_spec(
        cls,
        spec: FleetSpec,
        *,
        host: str | None = None,
        port: int | None = None,
        ca_file: str | None = None,
        bank_options: dict[str, Any] | None = None,
        **cabinet_options: Any,
    ) -> Fleet:
        """`host`/`port`/`ca_file` override the broker in the spec (the seeder writes the stack's CA there;
        no CA: clear text); `cabinet_options` go to every `Cabinet`, `bank_options` to every `BankModule`."""
        chosen_ca = ca_file or spec.broker.ca_file
        tls = client_context(chosen_ca) if chosen_ca else None
        by_id = {c.cabinet_id: c for c in spec.cabinets}
        banks = []
        for b in spec.banks:
            home = by_id.get(b.cabinet_id) if b.cabinet_id is not None else None
            slot = next((s for s in home.slots if s.bank_id == b.bank_id), None) if home is not None else None
            banks.append(
                BankModule(
                    b.bank_id,
                    b.password,
                    host or spec.broker.host,
                    port or spec.broker.port,
                    lat=b.lat if b.lat is not None else (home.lat if home is not None else None),
                    lon=b.lon if b.lon is not None else (home.lon if home is not None else None),
                    battery_pct=slot.battery_pct if slot is not None and slot.battery_pct is not None else 90,
                    tls=tls,
                    **(bank_options or {}),
                )
            )
        cabinets = (
            (VolinksCabinet if c.protocol == "volinks" else Cabinet)(
                c.cabinet_id,
                c.password,
                host or spec.broker.host,
                port or spec.broker.port,
                [SlotState(slot=s.slot, bank_id=s.bank_id, battery_pct=s.battery_pct) for s in c.slots],
                slot_count=c.slot_count,
                firmware=c.firmware,
                lat=c.lat,
                lon=c.lon,
                tls=tls,
                **cabinet_options,
            )
            for c in spec.cabinets
        )
        return cls(cabinets, banks)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        host: str | None = None,
        port: int | None = None,
        ca_file: str | None = None,
        bank_options: dict[str, Any] | None = None,
        **cabinet_options: Any,
    ) -> Fleet:
        spec = FleetSpec.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        return cls.from_spec(spec, host=host, port=port, ca_file=ca_file, bank_options=bank_options, **cabinet_options)

    def __len__(self) -> int:
        return len(self.cabinets)

    def __iter__(self) -> Iterator[Cabinet]:
        return iter(self.cabinets.values())

    def __contains__(self, cabinet_id: object) -> bool:
        return cabinet_id in self.cabinets

    def __getitem__(self, cabinet_id: str) -> Cabinet:
        return self.cabinets[cabinet_id]

    def get(self, cabinet_id: str) -> Cabinet | None:
        return self.cabinets.get(cabinet_id)

    @property
    def online_count(self) -> int:
        return sum(1 for c in self.cabinets.values() if c.online)

    async def start_all(self, *, wait: bool = True, timeout_s: float = 30.0, stagger_s: float = 0.0) -> bool:
        """Start every cabinet (`stagger_s` apart); with `wait`, True once all are online within `timeout_s`."""
        for i, cabinet in enumerate(self.cabinets.values()):
            if i and stagger_s > 0:
                await asyncio.sleep(stagger_s)
            await cabinet.start()
        for bank in self.banks.values():
            await bank.start()
        log.info("fleet started", extra={"cabinets": len(self.cabinets), "bank_modules": len(self.banks)})
        if not wait:
            return self.online_count == len(self.cabinets)
        return await self.wait_all_online(timeout_s)

    async def wait_all_online(self, timeout_s: float = 30.0) -> bool:
        results = await asyncio.gather(
            *(c.wait_online(timeout_s) for c in self.cabinets.values()),
            *(b.wait_online(timeout_s) for b in self.banks.values()),
        )
        return all(results)

    async def stop_all(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.cabinets.values()), *(b.stop() for b in self.banks.values()))
        log.info("fleet stopped", extra={"cabinets": len(self.cabinets)})

    def find_bank(self, bank_id: str) -> BankLocation | None:
        """Where a bank is: in a slot (anywhere in the fleet wins), else "out" from the cabinet that ejected it
        last; None if the fleet never saw it."""
        out_from: Cabinet | None = None
        out_at = -1.0
        for cabinet in self.cabinets.values():
            found = cabinet.locate(bank_id)
            if found is not None:
                return BankLocation(bank_id, cabinet.cabinet_id, "in_slot", found[0], found[1])
            since = cabinet.out_since(bank_id)
            if since is not None and since > out_at:
                out_from, out_at = cabinet, since
        if out_from is not None:
            return BankLocation(bank_id, out_from.cabinet_id, "out", None, out_from.banks_out()[bank_id])
        return None
