"""Seed a demo fleet: cabinets around Shenzhen with banks, per-device passwords in a 0600 fleet
file (the only place plaintext passwords live), and the broker's password file regenerated."""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_svc.models import Bank, Cabinet, DeviceCredential, Slot
from device_svc.provisioning.credentials import broker_entries, generate_password, set_password, verify_password
from device_svc.provisioning.mosquitto import reload_broker, write_atomically, write_password_file
from kit.db import unit_of_work

log = logging.getLogger(__name__)

ORIGIN = (22.54, 114.05)  # Shenzhen, Futian
SPACING_DEG = 0.003  # about 330 m north-south, 310 m east-west
FIRMWARE = "pb-cab-1.0.0"
LOW_BATTERY_BANK = "PB-000002"
EMPTY_SLOTS = 2


@dataclass(frozen=True)
class BrokerTarget:
    host: str
    port: int
    password_file: Path | None
    pidfile: Path | None
    service_user: str
    service_password: str


@dataclass(frozen=True)
class SeedResult:
    cabinets_created: int
    passwords_generated: int
    broker_file_written: bool
    broker_reloaded: bool
    fleet: dict[str, Any]


def cabinet_id(n: int) -> str:
    return f"CAB-{n:04d}"


def bank_id(n: int) -> str:
    return f"PB-{n:06d}"


def plan_cabinet(n: int, slot_count: int, rng: random.Random) -> tuple[float, float, dict[int, tuple[str, int]]]:
    """Position and initial banks {slot: (bank_id, battery)} of cabinet n (1-based); always draws
    the same numbers from `rng`, so a given seed plans the same fleet on every run."""
    row, col = divmod(n - 1, 4)
    lat = round(ORIGIN[0] + row * SPACING_DEG + rng.uniform(-0.0004, 0.0004), 6)
    lon = round(ORIGIN[1] + col * SPACING_DEG + rng.uniform(-0.0004, 0.0004), 6)
    filled = max(slot_count - EMPTY_SLOTS, 0)
    banks = {}
    for slot in range(1, filled + 1):
        bid = bank_id((n - 1) * filled + slot)
        battery = rng.randint(60, 100)
        banks[slot] = (bid, 10 if bid == LOW_BATTERY_BANK else battery)
    return lat, lon, banks


def bank_identity(bid: str) -> dict[str, str]:
    """6.2.1: the QR code printed on a bank, its NFC tag id and its Bluetooth address (derived
    from the id, so a seed is reproducible)."""
    digest = hashlib.sha256(bid.encode()).hexdigest()
    mac = ":".join(digest[i : i + 2] for i in range(0, 12, 2)).upper()
    return {"qr_code": f"https://pb.example/q/{bid}", "nfc_uid": digest[:14].upper(), "ble_mac": mac}


def read_fleet_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        known = {c["cabinet_id"]: c["password"] for c in data.get("cabinets", []) if c.get("password")}
        known |= {b["bank_id"]: b["password"] for b in data.get("banks", []) if b.get("password")}
        return known
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("fleet file unreadable; its passwords are regenerated", extra={"path": str(path)})
        return {}


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    cabinets: int,
    slots: int,
    fleet_out: Path,
    broker: BrokerTarget,
    rng_seed: int = 42,
    bank_modules: int = 0,
    bank_modules_last: bool = False,
) -> SeedResult:
    """`bank_modules`: how many banks (the first ones, or the last ones with `bank_modules_last`, so a
    benchmark's modules stay out of the demo cabinets) have their own cellular module and get a
    device credential of their own."""
    rng = random.Random(rng_seed)
    known_passwords = read_fleet_passwords(fleet_out)
    created = generated = 0
    now = datetime.now(UTC)
    fleet_cabinets = []
    async with unit_of_work(sessionmaker) as session:
        for n in range(1, cabinets + 1):
            cid = cabinet_id(n)
            lat, lon, banks = plan_cabinet(n, slots, rng)
            if await session.get(Cabinet, cid) is None:
                created += 1
                await _create_cabinet(session, cid, n, lat, lon, slots, banks, now)
            password, fresh = await _ensure_credential(session, cid, known_passwords.get(cid), now)
            generated += fresh
            fleet_cabinets.append(await _fleet_entry(session, cid, password))
        fleet_banks = []
        all_banks = [b for c in fleet_cabinets for b in (s["bank_id"] for s in c["slots"]) if b]
        count = max(bank_modules, 0)
        module_ids = (all_banks[-count:] if bank_modules_last else all_banks[:count]) if count else []
        for bid in module_ids:
            bank = await session.get(Bank, bid)
            assert bank is not None
            bank.has_module = True
            password, fresh = await _ensure_credential(session, bid, known_passwords.get(bid), now, kind="bank")
            generated += fresh
            fleet_banks.append({"bank_id": bid, "password": password, "cabinet_id": bank.cabinet_id})
        entries = await broker_entries(session, broker.service_user, broker.service_password)
    fleet: dict[str, Any] = {"broker": {"host": broker.host, "port": broker.port}, "cabinets": fleet_cabinets}
    if fleet_banks:
        fleet["banks"] = fleet_banks
    write_atomically(fleet_out, json.dumps(fleet, indent=2) + "\n", mode=0o600)
    written = reloaded = False
    if broker.password_file is not None:
        write_password_file(broker.password_file, entries)
        written = True
        reloaded = reload_broker(broker.pidfile)
    return SeedResult(created, generated, written, reloaded, fleet)


async def _create_cabinet(
    session: AsyncSession,
    cid: str,
    n: int,
    lat: float,
    lon: float,
    slots: int,
    banks: dict[int, tuple[str, int]],
    now: datetime,
) -> None:
    session.add(
        Cabinet(
            id=cid,
            name=f"Futian station {n}",
            lat=lat,
            lon=lon,
            address=f"Futian District, Shenzhen, point {n}",
            region="Futian",
            opening_hours="00:00-24:00",
            slot_count=slots,
            online=False,
            firmware=FIRMWARE,
        )
    )
    await session.flush()
    for slot in range(1, slots + 1):
        planned = banks.get(slot)
        if planned is not None and await session.get(Bank, planned[0]) is not None:
            planned = None  # that bank already lives elsewhere
        session.add(Slot(cabinet_id=cid, slot_no=slot, bank_id=planned[0] if planned else None))
        if planned is not None:
            session.add(
                Bank(
                    id=planned[0],
                    battery_pct=planned[1],
                    state="in_cabinet",
                    cabinet_id=cid,
                    slot_no=slot,
                    state_changed_at=now,
                    capacity_mah=5000,
                    in_service_at=now,
                    **bank_identity(planned[0]),
                )
            )
    await session.flush()


async def _ensure_credential(
    session: AsyncSession, device_id: str, known: str | None, now: datetime, kind: str = "cabinet"
) -> tuple[str, bool]:
    """The device's password: the fleet file's when it has one, else a new one."""
    credential = await session.get(DeviceCredential, device_id)
    if credential is None:
        credential = DeviceCredential(device_id=device_id, kind=kind, active=True, rotated_at=now)
        session.add(credential)
    password = known if known is not None else generate_password()
    if known is None or not credential.password_hash or not verify_password(known, credential.password_hash):
        set_password(credential, password)
        credential.rotated_at = now
        credential.active = True
    await session.flush()
    return password, known is None


async def _fleet_entry(session: AsyncSession, cid: str, password: str) -> dict[str, Any]:
    cabinet = await session.get(Cabinet, cid)
    assert cabinet is not None
    rows = (
        await session.execute(
            select(Slot.slot_no, Slot.bank_id, Bank.battery_pct)
            .outerjoin(Bank, Bank.id == Slot.bank_id)
            .where(Slot.cabinet_id == cid)
            .order_by(Slot.slot_no)
        )
    ).all()
    return {
        "cabinet_id": cid,
        "password": password,
        "lat": cabinet.lat,
        "lon": cabinet.lon,
        "slot_count": cabinet.slot_count,
        "firmware": cabinet.firmware or FIRMWARE,
        "slots": [{"slot": s, "bank_id": b, "battery_pct": p if b is not None else None} for s, b, p in rows],
    }


async def sync_broker(sessionmaker: async_sessionmaker[AsyncSession], broker: BrokerTarget) -> bool:
    """Rewrite the broker's password file from the registry (no new passwords) and reload it."""
    if broker.password_file is None:
        raise ValueError("MQTT_PASSWORD_FILE is not set")
    async with unit_of_work(sessionmaker) as session:
        entries = await broker_entries(session, broker.service_user, broker.service_password)
    write_password_file(broker.password_file, entries)
    return reload_broker(broker.pidfile)
