"""Provisioning SQL, set-based: a fleet of tens of thousands of devices is written with COPY (cabinets,
slots, banks) and one statement over arrays (credentials), not a round trip per device. Lookups by many ids
bind one array (`IN (SELECT unnest(:ids))`), not an `IN (...)` of thousands of parameters, which SQLAlchemy
renders one by one: for a 5,000-bank import the three identity lookups took more CPU to compile than the rest of
the import (measured, issue 17). Never commits."""

from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, text, union, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import DateTime, String

from device_svc.models import Bank, Cabinet, DeviceCredential, Slot

SlotOccupant = tuple[int, str | None, int | None]  # (slot, bank id, battery)
CabinetProfile = tuple[float, float, int, str | None]  # (lat, lon, slot count, firmware)

# Ids per `IN (...)` lookup: far below asyncpg's 32,767 bind parameters.
LOOKUP_CHUNK = 5_000


def _among(
    column: InstrumentedAttribute[str] | InstrumentedAttribute[str | None], ids: Sequence[str]
) -> ColumnElement[bool]:
    """`column IN (SELECT unnest(:ids))`, the ids one array parameter: a semi-join, which PostgreSQL runs by
    the index or by hashing the ids. Not `column = ANY(:ids)`: once the statement is prepared and its plan
    generic, PostgreSQL may read the growing table with that as a filter, comparing every row with every id
    (3-8 s per 2,500-bank import while 120,000 banks were provisioned, seen in its log, issue 17)."""
    return column.in_(select(func.unnest(bindparam(None, list(ids), type_=ARRAY(String())))))


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), LOOKUP_CHUNK):
        yield ids[start : start + LOOKUP_CHUNK]


async def existing_cabinet_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update((await session.execute(select(Cabinet.id).where(_among(Cabinet.id, chunk)))).scalars())
    return found


async def existing_bank_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update((await session.execute(select(Bank.id).where(_among(Bank.id, chunk)))).scalars())
    return found


async def stored_password_hashes(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """device id -> our password hash, for the devices among `ids` that have a credential."""
    found: dict[str, str] = {}
    for chunk in _chunks(ids):
        stmt = select(DeviceCredential.device_id, DeviceCredential.password_hash).where(
            _among(DeviceCredential.device_id, chunk)
        )
        found.update({device_id: password_hash for device_id, password_hash in (await session.execute(stmt)).all()})
    return found


async def insert_cabinets(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _copy(session, Cabinet.__tablename__, rows)


async def insert_slots(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _copy(session, Slot.__tablename__, rows)


async def insert_banks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await _copy(session, Bank.__tablename__, rows)


async def _copy(session: AsyncSession, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """COPY `rows` (all with the same keys) into `table` in the session's transaction: the bulk tables
    of a fleet (8 slots and 6 banks a cabinet) go in at PostgreSQL's COPY speed, several times a multi-row
    INSERT's. Columns left out take their defaults; triggers (the banks' transition log) still fire."""
    if not rows:
        return
    columns = list(rows[0])
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is None:
        raise RuntimeError("the session's connection has no driver connection")
    record = itemgetter(*columns)  # a tuple per row, built in C (a generator per row was 0.47 s for 40,000 slots)
    records = [record(row) for row in rows] if len(columns) > 1 else [(row[columns[0]],) for row in rows]
    await driver.copy_records_to_table(table, records=records, columns=columns)


async def mark_modules(session: AsyncSession, bank_ids: Sequence[str]) -> dict[str, str | None]:
    """Flag banks as carrying their own module; bank id -> the cabinet it is in."""
    placed: dict[str, str | None] = {}
    for chunk in _chunks(bank_ids):
        stmt = update(Bank).where(_among(Bank.id, chunk)).values(has_module=True).returning(Bank.id, Bank.cabinet_id)
        result = await session.execute(stmt, execution_options={"synchronize_session": False})
        placed.update({bank_id: cabinet_id for bank_id, cabinet_id in result.all()})
    return placed


_UPSERT_CREDENTIALS = text(
    """
    INSERT INTO device_credentials (device_id, kind, password_hash, broker_hash, rotated_at, active)
    SELECT device_id, kind, password_hash, broker_hash, rotated_at, true
    FROM unnest(:device_ids, :kinds, :password_hashes, :broker_hashes, :rotated_ats)
        AS given(device_id, kind, password_hash, broker_hash, rotated_at)
    ON CONFLICT (device_id) DO UPDATE SET
        password_hash = excluded.password_hash,
        broker_hash = excluded.broker_hash,
        rotated_at = excluded.rotated_at,
        active = true
    """
).bindparams(
    bindparam("device_ids", type_=ARRAY(String())),
    bindparam("kinds", type_=ARRAY(String())),
    bindparam("password_hashes", type_=ARRAY(String())),
    bindparam("broker_hashes", type_=ARRAY(String())),
    bindparam("rotated_ats", type_=ARRAY(DateTime(timezone=True))),
)


async def upsert_credentials(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """rows: {"device_id", "kind", "password_hash", "broker_hash", "rotated_at"}; active either way. One
    statement over arrays: an executemany of an upsert runs row by row (5,000 statements, and the broker-auth
    statement trigger twice for each: 2.0 s of a 5,000-cabinet import, measured, issue 17)."""
    if not rows:
        return
    await session.execute(
        _UPSERT_CREDENTIALS,
        {
            "device_ids": [row["device_id"] for row in rows],
            "kinds": [row["kind"] for row in rows],
            "password_hashes": [row["password_hash"] for row in rows],
            "broker_hashes": [row["broker_hash"] for row in rows],
            "rotated_ats": [row["rotated_at"] for row in rows],
        },
    )


async def slot_occupants(session: AsyncSession, cabinet_ids: Iterable[str]) -> dict[str, list[SlotOccupant]]:
    """cabinet id -> [(slot, bank id, battery)] in slot order."""
    by_cabinet: dict[str, list[SlotOccupant]] = {}
    for chunk in _chunks(list(cabinet_ids)):
        stmt = (
            select(Slot.cabinet_id, Slot.slot_no, Slot.bank_id, Bank.battery_pct)
            .outerjoin(Bank, Bank.id == Slot.bank_id)
            .where(_among(Slot.cabinet_id, chunk))
            .order_by(Slot.cabinet_id, Slot.slot_no)
        )
        for cabinet_id, slot_no, bank_id, battery in (await session.execute(stmt)).all():
            by_cabinet.setdefault(cabinet_id, []).append((slot_no, bank_id, battery))
    return by_cabinet


async def cabinet_profiles(session: AsyncSession, ids: Sequence[str]) -> dict[str, CabinetProfile]:
    """cabinet id -> (lat, lon, slot count, firmware)."""
    found: dict[str, CabinetProfile] = {}
    for chunk in _chunks(ids):
        stmt = select(Cabinet.id, Cabinet.lat, Cabinet.lon, Cabinet.slot_count, Cabinet.firmware).where(
            _among(Cabinet.id, chunk)
        )
        found.update({row[0]: (row[1], row[2], row[3], row[4]) for row in (await session.execute(stmt)).all()})
    return found


async def active_broker_entries(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(
        select(DeviceCredential.device_id, DeviceCredential.broker_hash).where(DeviceCredential.active.is_(True))
    )
    return {device_id: broker_hash for device_id, broker_hash in rows.all()}


async def banks_with_identities(session: AsyncSession, identities: Sequence[str]) -> list[str]:
    """Ids of banks whose QR code, NFC tag id or Bluetooth address is one of `identities`: the given values
    joined to each column's unique index. Not `col = ANY(:ids) OR ...`: once the statement is prepared and its
    plan generic, PostgreSQL may read the growing table with that as a filter, comparing every row with every
    value (12 s per 2,500-bank import, measured while provisioning 120,000 banks in parallel, issue 17); a join
    costs at most one pass over each side."""
    found: list[str] = []
    for chunk in _chunks(identities):
        values = bindparam("identities", list(chunk), type_=ARRAY(String()))
        given = select(func.unnest(values).column_valued("v")).subquery("given")
        stmt = union(
            *(select(Bank.id).join(given, column == given.c.v) for column in (Bank.qr_code, Bank.nfc_uid, Bank.ble_mac))
        )
        found.extend((await session.execute(stmt)).scalars())
    return found
