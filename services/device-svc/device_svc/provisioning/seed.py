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

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.vendors import volinks
from device_svc.brokerauth.repository import credentials_version
from device_svc.brokerauth.service import wait_for_brokers
from device_svc.provisioning import repository as repo
from device_svc.provisioning.credentials import (
    broker_entries,
    credential_row,
    generate_password,
    verify_password,
)
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
    ca_file: Path | None = None  # written to the fleet file: devices verify the broker against it


# A seed (thousands of devices) waits this long for the broker-auth sidecar to apply it.
SIDECAR_WAIT_S = 30.0


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


def volinks_cabinet_id(n: int) -> str:
    return f"VL-CAB-{n:04d}"


VOLINKS_SN_BASE = 10_000_000


def plan_volinks_cabinet(
    n: int, position: int, slot_count: int, rng: random.Random
) -> tuple[float, float, dict[int, tuple[str, int]]]:
    """A cabinet of another maker (volinks): placed on the same grid after the platform's own, its banks
    named by their SN (`VL-<sn>`, contracts.vendors.volinks)."""
    lat, lon, planned = plan_cabinet(position, slot_count, rng)
    filled = max(slot_count - EMPTY_SLOTS, 0)
    banks = {
        slot: (volinks.bank_id_of(VOLINKS_SN_BASE + (n - 1) * filled + slot), pct) for slot, (_, pct) in planned.items()
    }
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
    volinks_cabinets: int = 0,
) -> SeedResult:
    """`bank_modules`: how many banks (the first ones, or the last ones with `bank_modules_last`, so a
    benchmark's modules stay out of the demo cabinets) have their own cellular module and get a
    device credential of their own.

    Set-based: one transaction, a few multi-row statements per table, one password-file rewrite and
    one SIGHUP for the whole fleet (20,000 cabinets with 8 slots each in seconds)."""
    rng = random.Random(rng_seed)
    known_passwords = read_fleet_passwords(fleet_out)
    now = datetime.now(UTC)
    plans = {cabinet_id(n): (n, *plan_cabinet(n, slots, rng)) for n in range(1, cabinets + 1)}
    # volinks cabinets report positions in boards of four: their slot count is a multiple of 4.
    volinks_slots = -(-slots // volinks.HOLES_PER_BOARD) * volinks.HOLES_PER_BOARD
    vendor_ids = {volinks_cabinet_id(n) for n in range(1, volinks_cabinets + 1)}
    for n in range(1, volinks_cabinets + 1):
        plans[volinks_cabinet_id(n)] = (cabinets + n, *plan_volinks_cabinet(n, cabinets + n, volinks_slots, rng))
    ids = list(plans)
    async with unit_of_work(sessionmaker) as session:
        existing = await repo.existing_cabinet_ids(session, ids)
        new_ids = [cid for cid in ids if cid not in existing]
        planned_banks = [bid for cid in new_ids for bid, _ in plans[cid][3].values()]
        banks_elsewhere = await repo.existing_bank_ids(session, planned_banks)
        cabinet_rows, slot_rows, bank_rows = [], [], []
        for cid in new_ids:
            n, lat, lon, banks = plans[cid]
            count = volinks_slots if cid in vendor_ids else slots
            cabinet_rows.append(_cabinet_row(cid, n, lat, lon, count, "volinks" if cid in vendor_ids else "native"))
            for slot in range(1, count + 1):
                planned = banks.get(slot)
                if planned is not None and planned[0] in banks_elsewhere:
                    planned = None  # that bank already lives elsewhere
                slot_rows.append({"cabinet_id": cid, "slot_no": slot, "bank_id": planned[0] if planned else None})
                if planned is not None:
                    bank_rows.append(_bank_row(planned[0], planned[1], cid, slot, now))
        await repo.insert_cabinets(session, cabinet_rows)
        await repo.insert_slots(session, slot_rows)
        await repo.insert_banks(session, bank_rows)

        occupants = await repo.slot_occupants(session, ids)
        all_banks = [bid for cid in ids for _, bid, _ in occupants.get(cid, []) if bid]
        count = max(bank_modules, 0)
        module_ids = (all_banks[-count:] if bank_modules_last else all_banks[:count]) if count else []
        module_cabinets = await repo.mark_modules(session, module_ids)
        devices = [(cid, "cabinet") for cid in ids] + [(bid, "bank") for bid in module_ids]
        passwords, generated = await _ensure_credentials(session, devices, known_passwords, now)

        profiles = await repo.cabinet_profiles(session, ids)
        fleet_cabinets = [_fleet_entry(cid, passwords[cid], profiles[cid], occupants.get(cid, [])) for cid in ids]
        for entry in fleet_cabinets:
            if entry["cabinet_id"] in vendor_ids:
                entry["protocol"] = volinks.PROTOCOL
        fleet_banks = [
            {"bank_id": bid, "password": passwords[bid], "cabinet_id": module_cabinets.get(bid)} for bid in module_ids
        ]
        entries = await broker_entries(session, broker.service_user, broker.service_password)
    broker_spec: dict[str, Any] = {"host": broker.host, "port": broker.port}
    if broker.ca_file is not None:
        broker_spec["ca_file"] = str(broker.ca_file)
    fleet: dict[str, Any] = {"broker": broker_spec, "cabinets": fleet_cabinets}
    if fleet_banks:
        fleet["banks"] = fleet_banks
    write_atomically(fleet_out, json.dumps(fleet, indent=2) + "\n", mode=0o600)
    written = reloaded = False
    if broker.password_file is not None:  # a broker of its own (tests, a one-off tool): write its file here
        write_password_file(broker.password_file, entries)
        written = True
        reloaded = reload_broker(broker.pidfile)
    else:  # the stacks and production: the broker-auth sidecar applies it; wait until every live broker has
        async with sessionmaker() as session:
            version = await credentials_version(session)
        reloaded = await wait_for_brokers(sessionmaker, version, SIDECAR_WAIT_S)
    return SeedResult(len(new_ids), generated, written, reloaded, fleet)


def _cabinet_row(cid: str, n: int, lat: float, lon: float, slots: int, protocol: str) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "id": cid,
        "name": f"Futian station {n}",
        "lat": lat,
        "lon": lon,
        "address": f"Futian District, Shenzhen, point {n}",
        "region": "Futian",
        "opening_hours": "00:00-24:00",
        "slot_count": slots,
        "online": False,
        "firmware": FIRMWARE,
    }


def _bank_row(bid: str, battery: int, cid: str, slot: int, now: datetime) -> dict[str, Any]:
    return {
        "id": bid,
        "battery_pct": battery,
        "state": "in_cabinet",
        "cabinet_id": cid,
        "slot_no": slot,
        "state_changed_at": now,
        "capacity_mah": 5000,
        "in_service_at": now,
        **bank_identity(bid),
    }


async def _ensure_credentials(
    session: AsyncSession, devices: list[tuple[str, str]], known: dict[str, str], now: datetime
) -> tuple[dict[str, str], int]:
    """Each device's password: the fleet file's when the stored hash still accepts it, else a new
    one (written in one multi-row upsert). Returns (device id -> password, passwords generated)."""
    stored = await repo.stored_password_hashes(session, [device_id for device_id, _ in devices])
    passwords: dict[str, str] = {}
    rows = []
    generated = 0
    for device_id, kind in devices:
        password = known.get(device_id)
        stored_hash = stored.get(device_id)
        if password is not None and stored_hash and verify_password(password, stored_hash):
            passwords[device_id] = password
            continue
        if password is None:
            password = generate_password()
            generated += 1
        passwords[device_id] = password
        rows.append(credential_row(device_id, kind, password, now))
    await repo.upsert_credentials(session, rows)
    return passwords, generated


def _fleet_entry(
    cid: str,
    password: str,
    profile: tuple[float, float, int, str | None],
    occupants: list[tuple[int, str | None, int | None]],
) -> dict[str, Any]:
    lat, lon, slot_count, firmware = profile
    return {
        "cabinet_id": cid,
        "password": password,
        "lat": lat,
        "lon": lon,
        "slot_count": slot_count,
        "firmware": firmware or FIRMWARE,
        "slots": [{"slot": s, "bank_id": b, "battery_pct": p if b is not None else None} for s, b, p in occupants],
    }


async def sync_broker(sessionmaker: async_sessionmaker[AsyncSession], broker: BrokerTarget) -> bool:
    """Rewrite the broker's password file from the registry (no new passwords) and reload it."""
    if broker.password_file is None:
        raise ValueError("MQTT_PASSWORD_FILE is not set")
    async with unit_of_work(sessionmaker) as session:
        entries = await broker_entries(session, broker.service_user, broker.service_password)
    write_password_file(broker.password_file, entries)
    return reload_broker(broker.pidfile)
