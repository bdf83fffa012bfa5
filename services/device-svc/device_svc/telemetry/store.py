"""The current-state store of banks with their own module: the latest presence (last seen, signal)
and the latest report (position, battery, power statistics) per bank, written in batches.

Reports are coalesced in memory per bank and flushed every `interval_s` (or when `max_rows` banks
are waiting) with one executemany per kind. Every write is guarded in SQL: a report whose device
time is not newer than the stored `telemetry_at` changes nothing, and `last_seen_at` only moves
forward, so late, out-of-order or replayed reports (also from another device-svc instance) never
overwrite newer state.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_svc.metrics import STATE_ROWS_WRITTEN, STATE_WRITES_SKIPPED
from kit.db import unit_of_work

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


@dataclass
class _Pending:
    presence: dict[str, Presence] = field(default_factory=dict)
    states: dict[str, BankState] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.presence) + len(self.states)


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


class StateBatcher:
    """Collects presence and reports per bank; `run()` flushes them in batches until cancelled."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, interval_s: float = 0.2, max_rows: int = 500
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval_s
        self._max_rows = max_rows
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def seen(self, bank_id: str, presence: Presence) -> None:
        old = self._pending.presence.get(bank_id)
        if old is None or presence.seen_at >= old.seen_at:
            rssi = presence.rssi_dbm if presence.rssi_dbm is not None else (old.rssi_dbm if old else None)
            self._pending.presence[bank_id] = replace(presence, rssi_dbm=rssi)
        self._nudge()

    def report(self, bank_id: str, state: BankState) -> None:
        old = self._pending.states.get(bank_id)
        if old is None:
            self._pending.states[bank_id] = state
        elif state.at > old.at:
            self._pending.states[bank_id] = state.merged_over(old)
        elif state.at < old.at:
            self._pending.states[bank_id] = old.merged_over(state)
        self._nudge()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _nudge(self) -> None:
        if len(self._pending) >= self._max_rows:
            self._wake.set()

    async def flush(self) -> int:
        async with self._lock:
            batch, self._pending = self._pending, _Pending()
            if not len(batch):
                return 0
            try:
                async with unit_of_work(self._sessionmaker) as session:
                    return await write_states(session, batch.presence, batch.states)
            except Exception:
                # Put it back (newer reports that came in meanwhile win) and try again next time.
                for bank_id, p in batch.presence.items():
                    self.seen(bank_id, p)
                for bank_id, s in batch.states.items():
                    self.report(bank_id, s)
                raise

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bank state flush failed; retrying")

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("final bank state flush failed")
