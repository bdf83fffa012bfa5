"""The current-state store of banks with their own module: the latest presence (last seen, signal)
and the latest report (position, battery, power statistics) per bank, written set-based (one
statement per batch, rows as arrays; see telemetry.ingest).

Every write is guarded in SQL: a report whose device time is not newer than the stored
`telemetry_at` changes nothing, and `last_seen_at` only moves forward, so late, out-of-order or
replayed reports (also from another device-svc instance) never overwrite newer state.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.metrics import STATE_ROWS_WRITTEN, STATE_WRITES_SKIPPED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Presence:
    seen_at: datetime
    rssi_dbm: int | None = None


@dataclass(frozen=True)
class BankState:
    """What one bank_report said, at the device time `at` (already checked against our clock)."""

    at: datetime
    battery_pct: int | None = None
    charging: bool | None = None
    lat: float | None = None
    lon: float | None = None
    position_at: datetime | None = None
    temperature_c: float | None = None
    charge_cycles: int | None = None
    health_pct: int | None = None
    charge_mah_total: int | None = None
    discharge_mah_total: int | None = None

    def merged_over(self, older: "BankState") -> "BankState":
        """This (newer) report, with what it did not measure taken from an older one."""
        values: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            mine = getattr(self, name)
            values[name] = mine if mine is not None else getattr(older, name)
        if self.lat is None:
            values["lat"], values["lon"], values["position_at"] = older.lat, older.lon, older.position_at
        return BankState(**values)


# One statement per batch: the rows travel as arrays and are unnested server-side.
_PRESENCE = text(
    """
    UPDATE banks AS b
       SET last_seen_at = v.seen_at, rssi_dbm = coalesce(v.rssi, b.rssi_dbm)
      FROM unnest(CAST(:ids AS varchar[]), CAST(:seen AS timestamptz[]), CAST(:rssi AS int[])) AS v(id, seen_at, rssi)
     WHERE b.id = v.id AND (b.last_seen_at IS NULL OR b.last_seen_at < v.seen_at)
    """
)

_STATE = text(
    """
    UPDATE banks AS b
       SET telemetry_at = v.at,
           has_module = true,
           battery_pct = coalesce(v.battery, b.battery_pct),
           charging = coalesce(v.charging, b.charging),
           lat = coalesce(v.lat, b.lat),
           lon = coalesce(v.lon, b.lon),
           position_at = CASE WHEN v.lat IS NOT NULL THEN v.position_at ELSE b.position_at END,
           position_overdue_at = CASE WHEN v.lat IS NOT NULL THEN NULL ELSE b.position_overdue_at END,
           temperature_c = coalesce(v.temp, b.temperature_c),
           charge_cycles = coalesce(v.cycles, b.charge_cycles),
           health_pct = coalesce(v.health, b.health_pct),
           charge_mah_total = coalesce(v.charged, b.charge_mah_total),
           discharge_mah_total = coalesce(v.discharged, b.discharge_mah_total)
      FROM unnest(
            CAST(:ids AS varchar[]), CAST(:at AS timestamptz[]), CAST(:battery AS int[]), CAST(:charging AS bool[]),
            CAST(:lat AS float8[]), CAST(:lon AS float8[]), CAST(:position_at AS timestamptz[]),
            CAST(:temp AS float8[]), CAST(:cycles AS int[]), CAST(:health AS int[]),
            CAST(:charged AS bigint[]), CAST(:discharged AS bigint[])
           ) AS v(id, at, battery, charging, lat, lon, position_at, temp, cycles, health, charged, discharged)
     WHERE b.id = v.id AND (b.telemetry_at IS NULL OR b.telemetry_at < v.at)
    """
)


async def write_states(session: AsyncSession, presence: dict[str, Presence], states: dict[str, BankState]) -> int:
    """Apply one batch; returns how many rows changed (the rest were older than what is stored)."""
    changed = 0
    if presence:
        ids = sorted(presence)
        result = await session.execute(
            _PRESENCE,
            {"ids": ids, "seen": [presence[b].seen_at for b in ids], "rssi": [presence[b].rssi_dbm for b in ids]},
        )
        changed += max(getattr(result, "rowcount", 0) or 0, 0)
    if states:
        ids = sorted(states)
        rows = [states[b] for b in ids]
        result = await session.execute(
            _STATE,
            {
                "ids": ids,
                "at": [r.at for r in rows],
                "battery": [r.battery_pct for r in rows],
                "charging": [r.charging for r in rows],
                "lat": [r.lat for r in rows],
                "lon": [r.lon for r in rows],
                "position_at": [r.position_at for r in rows],
                "temp": [r.temperature_c for r in rows],
                "cycles": [r.charge_cycles for r in rows],
                "health": [r.health_pct for r in rows],
                "charged": [r.charge_mah_total for r in rows],
                "discharged": [r.discharge_mah_total for r in rows],
            },
        )
        written = max(getattr(result, "rowcount", 0) or 0, 0)
        STATE_ROWS_WRITTEN.inc(written)
        STATE_WRITES_SKIPPED.inc(max(len(rows) - written, 0))
        changed += written
    return changed
