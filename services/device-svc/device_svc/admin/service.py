"""Provisioning (6.2.1, 6.3.2): create cabinets and banks, bulk import, retire; per-device
credentials issued at provisioning, rotated or revoked without restarting the broker (its password
file is regenerated from the registry and the broker is sent SIGHUP, after commit)."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import EventData, PresenceReason
from device_svc.admin.schemas import BankCreate, CabinetCreate, CabinetUpdate, Provisioned
from device_svc.models import Bank, Cabinet, DeviceCredential, Slot
from device_svc.ops import repository as ops_repo
from device_svc.presence import transition_events
from device_svc.provisioning import repository as prov_repo
from device_svc.provisioning.credentials import credential_rows, generate_password, set_password
from device_svc.registry.repository import empty_slot_of_bank, take_offline
from kit.errors import Conflict, NotFound

log = logging.getLogger(__name__)

Item = TypeVar("Item", CabinetCreate, BankCreate)
Publish = Callable[[AsyncSession, EventData, str], Awaitable[Envelope]]


class AlreadyRegistered(Conflict):
    code = "device_already_registered"
    title = "A device with this id or identity is already registered"


class DeviceNotFound(NotFound):
    code = "device_not_found"
    title = "No such device"


async def _credential(session: AsyncSession, device_id: str, kind: str) -> str:
    """A new password for the device (replacing any), active. Returns the plaintext once."""
    credential = await session.get(DeviceCredential, device_id)
    now = datetime.now(UTC)
    if credential is None:
        credential = DeviceCredential(device_id=device_id, kind=kind, active=True, rotated_at=now)
        session.add(credential)
    password = generate_password()
    set_password(credential, password)
    credential.active = True
    credential.rotated_at = now
    await session.flush()
    return password


async def taken(session: AsyncSession, device_id: str) -> bool:
    return (await session.get(Cabinet, device_id)) is not None or (await session.get(Bank, device_id)) is not None


async def create_cabinet(session: AsyncSession, body: CabinetCreate) -> tuple[Provisioned, str]:
    if await taken(session, body.id):
        raise AlreadyRegistered(f"{body.id} is already registered")
    session.add(
        Cabinet(
            id=body.id,
            name=body.name,
            lat=body.lat,
            lon=body.lon,
            address=body.address,
            region=body.region,
            opening_hours=body.opening_hours,
            slot_count=body.slot_count,
            model=body.model,
            protocol=body.protocol,
            online=False,
            state="active",
        )
    )
    await session.flush()
    session.add_all(Slot(cabinet_id=body.id, slot_no=n) for n in range(1, body.slot_count + 1))
    password = await _credential(session, body.id, "cabinet")
    log.info("cabinet provisioned", extra={"device_id": body.id})
    return Provisioned(id=body.id, kind="cabinet", state="active"), password


@dataclass(frozen=True)
class Imported:
    created: list[Provisioned]
    skipped: list[str]
    passwords: dict[str, str]  # device id -> its new password (shown once)


async def import_cabinets(session: AsyncSession, items: Sequence[CabinetCreate]) -> Imported:
    """Set-based: ids already registered (or repeated in `items`) are skipped; the rest are written
    with one multi-row statement per table (cabinets, slots, credentials)."""
    cabinets, skipped = _split_new(items, await _unregistered(session, [item.id for item in items]))
    now = datetime.now(UTC)
    await prov_repo.insert_cabinets(
        session,
        [{**item.model_dump(), "online": False, "state": "active"} for item in cabinets],
    )
    await prov_repo.insert_slots(
        session,
        [{"cabinet_id": item.id, "slot_no": n} for item in cabinets for n in range(1, item.slot_count + 1)],
    )
    passwords = await _issue_credentials(session, [(item.id, "cabinet") for item in cabinets], now)
    log.info("cabinets imported", extra={"imported": len(cabinets), "skipped": len(items) - len(cabinets)})
    created = [Provisioned(id=item.id, kind="cabinet", state="active") for item in cabinets]
    return Imported(created, skipped, passwords)


async def import_banks(session: AsyncSession, items: Sequence[BankCreate]) -> Imported:
    """Set-based: ids already registered (or repeated in `items`) are skipped; an identity (QR code,
    NFC tag id, Bluetooth address) that belongs to another bank, registered or in this import,
    refuses the whole import."""
    new, skipped = _split_new(items, await _unregistered(session, [item.id for item in items]))
    banks = [_bank_row(item) for item in new]
    identities = [v for bank in banks for v in (bank["qr_code"], bank["nfc_uid"], bank["ble_mac"]) if v is not None]
    if len(set(identities)) != len(identities):
        raise AlreadyRegistered("two banks in this import share an identity")
    clash = await prov_repo.banks_with_identities(session, identities)
    if clash:
        raise AlreadyRegistered(f"an identity in this import belongs to {clash[0]}")
    now = datetime.now(UTC)
    await ops_repo.set_transition_reason(session, "provisioned")
    await prov_repo.insert_banks(session, [{**bank, "in_service_at": bank["in_service_at"] or now} for bank in banks])
    passwords = await _issue_credentials(session, [(bank["id"], "bank") for bank in banks if bank["has_module"]], now)
    log.info("banks imported", extra={"imported": len(banks), "skipped": len(items) - len(banks)})
    created = [Provisioned(id=bank["id"], kind="bank", state="maintenance") for bank in banks]
    return Imported(created, skipped, passwords)


async def _unregistered(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` that name no cabinet and no bank."""
    unique = list(dict.fromkeys(ids))
    cabinets = await prov_repo.existing_cabinet_ids(session, unique)
    banks = await prov_repo.existing_bank_ids(session, unique)
    return set(unique) - cabinets - banks


def _split_new(items: Sequence[Item], unregistered: set[str]) -> tuple[list[Item], list[str]]:
    """(items to create, ids skipped): registered ids, and an id's repeats after its first item."""
    remaining = set(unregistered)
    new: list[Item] = []
    skipped: list[str] = []
    for item in items:
        if item.id in remaining:
            remaining.discard(item.id)
            new.append(item)
        else:
            skipped.append(item.id)
    return new, skipped


def _bank_row(item: BankCreate) -> dict[str, Any]:
    """A `banks` row of an imported bank (identities stored upper case: compared as stored). Not in service
    until a cabinet reports it in a slot (then in_cabinet)."""
    return {
        "id": item.id,
        "model": item.model,
        "capacity_mah": item.capacity_mah,
        "qr_code": item.qr_code,
        "nfc_uid": item.nfc_uid.upper() if item.nfc_uid else None,
        "ble_mac": item.ble_mac.upper() if item.ble_mac else None,
        "in_service_at": item.in_service_at,
        "has_module": item.module,
        "state": "maintenance",
    }


async def _issue_credentials(
    session: AsyncSession, devices: Sequence[tuple[str, str]], now: datetime
) -> dict[str, str]:
    """A new password for each (device id, kind), hashed in parallel and written in one upsert."""
    passwords, rows = await credential_rows(devices, now)
    await prov_repo.upsert_credentials(session, rows)
    return passwords


async def update_cabinet(session: AsyncSession, cabinet_id: str, body: CabinetUpdate) -> Cabinet:
    cabinet = await session.get(Cabinet, cabinet_id, with_for_update=True)
    if cabinet is None:
        raise DeviceNotFound(f"{cabinet_id} is not registered")
    if cabinet.state == "retired":
        raise Conflict("A retired cabinet cannot be changed")
    for field, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(cabinet, field, value)
    await session.flush()
    log.info("cabinet updated", extra={"device_id": cabinet_id, "fields": sorted(body.model_fields_set)})
    return cabinet


async def create_bank(session: AsyncSession, body: BankCreate) -> tuple[Provisioned, str | None]:
    if await taken(session, body.id):
        raise AlreadyRegistered(f"{body.id} is already registered")
    nfc_uid = body.nfc_uid.upper() if body.nfc_uid else None  # stored upper case: compare as stored
    ble_mac = body.ble_mac.upper() if body.ble_mac else None
    identities = [v for v in (body.qr_code, nfc_uid, ble_mac) if v is not None]
    if identities:
        clash = await session.execute(
            select(Bank.id)
            .where(or_(Bank.qr_code.in_(identities), Bank.nfc_uid.in_(identities), Bank.ble_mac.in_(identities)))
            .limit(1)
        )
        if clash.first() is not None:
            raise AlreadyRegistered(f"an identity of {body.id} belongs to another bank")
    await ops_repo.set_transition_reason(session, "provisioned")
    # Not in service until a cabinet reports it in a slot (then in_cabinet).
    session.add(
        Bank(
            id=body.id,
            model=body.model,
            capacity_mah=body.capacity_mah,
            qr_code=body.qr_code,
            nfc_uid=nfc_uid,
            ble_mac=ble_mac,
            in_service_at=body.in_service_at or datetime.now(UTC),
            has_module=body.module,
            state="maintenance",
        )
    )
    await session.flush()
    password = await _credential(session, body.id, "bank") if body.module else None
    log.info("bank provisioned", extra={"device_id": body.id, "has_module": body.module})
    return Provisioned(id=body.id, kind="bank", state="maintenance"), password


async def rotate(session: AsyncSession, device_id: str) -> str:
    credential = await session.get(DeviceCredential, device_id, with_for_update=True)
    if credential is None:
        raise DeviceNotFound(f"{device_id} has no credential")
    password = await _credential(session, device_id, credential.kind)
    log.info("device credential rotated", extra={"device_id": device_id})
    return password


async def revoke(session: AsyncSession, device_id: str, publish: Publish) -> None:
    credential = await session.get(DeviceCredential, device_id, with_for_update=True)
    if credential is None:
        raise DeviceNotFound(f"{device_id} has no credential")
    credential.active = False
    await _revoked_offline(session, device_id, publish)
    log.info("device credential revoked", extra={"device_id": device_id})


async def _revoked_offline(session: AsyncSession, device_id: str, publish: Publish) -> None:
    """The broker drops a connected device once its password file no longer admits it, without
    publishing its last will: show it offline here, in the same transaction as the revocation."""
    taken = await take_offline(session, device_id)
    if taken is None:
        return
    kind, row = taken
    for event in transition_events(
        device_id,
        "cabinet" if kind == "cabinet" else "bank",
        online=False,
        reason=PresenceReason.CREDENTIAL_REVOKED,
        at=datetime.now(UTC),
        last_seen_at=row.last_seen_at,
        rssi_dbm=row.rssi_dbm,
    ):
        await publish(session, event, device_id)


async def retire(session: AsyncSession, device_id: str, reason: str, publish: Publish) -> Provisioned:
    """Out of service for good: retired in the registry, its credential revoked."""
    cabinet = await session.get(Cabinet, device_id, with_for_update=True)
    if cabinet is not None:
        cabinet.state = "retired"
        kind = "cabinet"
    else:
        bank = await session.get(Bank, device_id, with_for_update=True)
        if bank is None:
            raise DeviceNotFound(f"{device_id} is not registered")
        if bank.state == "rented":
            raise Conflict("A rented bank cannot be retired before it is returned")
        await ops_repo.set_transition_reason(session, f"retired: {reason}"[:100])
        if bank.cabinet_id is not None:
            await empty_slot_of_bank(session, bank.id)
        bank.state, bank.cabinet_id, bank.slot_no, bank.state_changed_at = "retired", None, None, datetime.now(UTC)
        kind = "bank"
    credential = await session.get(DeviceCredential, device_id, with_for_update=True)
    if credential is not None:
        credential.active = False
        await _revoked_offline(session, device_id, publish)
    await session.flush()
    log.info("device retired", extra={"device_id": device_id, "reason": reason})
    return Provisioned(id=device_id, kind=kind, state="retired")
