"""The state intake's common case in micro-batches: cabinets' `status`, and `hello` / `inventory`
snapshots that agree with the registry.

A broker restart makes every cabinet reconnect at once: each sends its `status` online and a `hello`
with its slots (and the broker replays every retained status to device-svc). One transaction per
message (a row lock, a replay check, slot and bank updates, an outbox insert and a commit each) took
the registry a minute to show 3,000 cabinets online again (issue 9). Almost all of these messages
change nothing but presence: the cabinet holds the banks the registry already places there. So a
batch (telemetry/batching.py) takes them together:

1. the batch's cabinets, locked in id order, with the banks the registry places in them or their
   snapshots name (locked in id order) and their slot rows;
2. per message: a `status` sets presence (a retained one replayed by the broker that matches the
   registry changes nothing); a snapshot is applied here only when it is newer (device time) than
   the stored one and agrees slot by slot with the registry (the same bank, fault and state in each
   reported slot), so all it changes is presence, the snapshot time, firmware and battery levels;
3. the replay check for the snapshots (one `INSERT … unnest … ON CONFLICT DO NOTHING RETURNING`),
   presence, snapshot times and battery levels in set-based statements, online transitions in one
   multi-row outbox insert, and the cabinets' telemetry (banks present and rentable) straight to
   Kafka with ids derived from (device, msg_id), as telemetry/ingest.py does.

Everything else (a snapshot that moves, places or misses a bank, an older snapshot, a bank's status,
an unknown or retired device) is answered `FALLBACK` and takes the one-by-one path in
mqtt/handlers.py, which owns those rules; it then runs after this batch committed, in the device's
lane, so the device's order holds.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import DeviceTelemetryReported, EventData, PresenceReason
from contracts.mqtt import Hello, Inventory, SlotFault, Status
from contracts.regions import region_at
from device_svc.clock import checked_device_time
from device_svc.metrics import RETAINED_STATUS_CURRENT, STATE_BATCH_FALLBACK, STATE_BATCH_SIZE
from device_svc.mqtt.incoming import Incoming, count_rejection
from device_svc.presence import transition_events
from device_svc.telemetry.batching import MicroBatcher
from device_svc.telemetry.ingest import FIRST_TIME, Feed, FeedEvent, PublishMany, feed_event_id
from kit.correlation import get_correlation_id
from kit.db import after_commit

log = logging.getLogger(__name__)

StateMessage = Status | Hello | Inventory


class Outcome(Enum):
    DONE = "done"
    FALLBACK = "fallback"  # the one-by-one path must handle it


_LOCK_CABINETS = text(
    "SELECT id, state, online, last_seen_at, rssi_dbm, inventory_at, slot_count, lat, lon, region "
    "FROM cabinets WHERE id = ANY(CAST(:ids AS varchar[])) ORDER BY id FOR NO KEY UPDATE"
)
_LOCK_BANKS = text(
    "SELECT id, state, cabinet_id, slot_no, operator_hold FROM banks "
    "WHERE cabinet_id = ANY(CAST(:cabinets AS varchar[])) OR id = ANY(CAST(:banks AS varchar[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)
_SLOTS = text("SELECT cabinet_id, slot_no, bank_id, fault FROM slots WHERE cabinet_id = ANY(CAST(:ids AS varchar[]))")
# `seen` null: presence is not news (an offline status); `inventory_at` / `firmware` null: unchanged.
_CABINETS = text(
    """
    UPDATE cabinets AS c
       SET online = v.online,
           last_seen_at = CASE WHEN v.seen IS NULL THEN c.last_seen_at ELSE greatest(c.last_seen_at, v.seen) END,
           inventory_at = coalesce(v.inventory_at, c.inventory_at),
           firmware = coalesce(v.firmware, c.firmware)
      FROM unnest(CAST(:ids AS varchar[]), CAST(:online AS boolean[]), CAST(:seen AS timestamptz[]),
                  CAST(:inventory_at AS timestamptz[]), CAST(:firmware AS varchar[]))
           AS v(id, online, seen, inventory_at, firmware)
     WHERE c.id = v.id
    """
)
_BANKS = text(
    """
    UPDATE banks AS b
       SET battery_pct = coalesce(v.battery, b.battery_pct),
           last_report_at = v.at
      FROM unnest(CAST(:ids AS varchar[]), CAST(:battery AS int[]), CAST(:at AS timestamptz[])) AS v(id, battery, at)
     WHERE b.id = v.id
    """
)


@dataclass
class _Item:
    incoming: Incoming
    msg: StateMessage
    retained: bool
    correlation_id: str | None


@dataclass
class _CabinetWrite:
    online: bool
    seen: datetime | None = None
    inventory_at: datetime | None = None
    firmware: str | None = None


@dataclass
class _Snapshot:
    item: "_Item"
    msg: Hello | Inventory
    reported_at: datetime
    present: int
    rentable: int
    batteries: dict[str, int | None]


@dataclass
class _Batch:
    outcomes: list[Outcome]
    cabinets: dict[str, _CabinetWrite] = field(default_factory=dict)
    snapshots: list[_Snapshot] = field(default_factory=list)
    events: list[tuple[EventData, str, str | None]] = field(default_factory=list)
    feed: list[FeedEvent] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    duplicates: list[_Snapshot] = field(default_factory=list)
    retained_current: int = 0
    changed: dict[tuple[bool, str], list[str]] = field(default_factory=dict)  # (online, why) -> cabinets


class SnapshotIngest:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish_many: PublishMany,
        *,
        feed: Feed,
        min_battery_pct: int,
        max_clock_skew_s: float,
        max_rows: int = 500,
        workers: int = 2,
        attempts: int = 3,
    ) -> None:
        self._publish_many = publish_many
        self._feed = feed
        self._min_battery = min_battery_pct
        self._max_skew = max_clock_skew_s
        self._batcher: MicroBatcher[_Item, Outcome] = MicroBatcher(
            "state",
            sessionmaker,
            self._apply,
            size=STATE_BATCH_SIZE,
            max_rows=max_rows,
            workers=workers,
            attempts=attempts,
        )

    @property
    def pending(self) -> int:
        return self._batcher.pending

    async def submit(self, incoming: Incoming, msg: StateMessage, retained: bool) -> Outcome:
        """Queue one parsed state message; returns when its batch committed: DONE, or FALLBACK when the
        one-by-one path must handle it (nothing of it was written)."""
        return await self._batcher.submit(_Item(incoming, msg, retained, get_correlation_id()))

    async def run(self) -> None:
        await self._batcher.run()

    async def close(self) -> None:
        await self._batcher.close()

    async def _apply(self, session: AsyncSession, items: list[_Item]) -> Sequence[Outcome]:
        batch = _Batch(outcomes=[Outcome.FALLBACK] * len(items))
        ids = sorted({item.incoming.device_id for item in items})
        cabinets = {r.id: r for r in (await session.execute(_LOCK_CABINETS, {"ids": ids})).all()}
        named = sorted(
            {
                s.bank_id
                for item in items
                if isinstance(item.msg, Hello | Inventory)
                for s in item.msg.slots
                if s.bank_id is not None
            }
        )
        banks: dict[str, Any] = {}
        slots: dict[tuple[str, int], Any] = {}
        if cabinets:
            rows = await session.execute(_LOCK_BANKS, {"cabinets": sorted(cabinets), "banks": named})
            banks = {r.id: r for r in rows.all()}
            slots = {(r.cabinet_id, r.slot_no): r for r in (await session.execute(_SLOTS, {"ids": sorted(cabinets)}))}
        held: dict[str, list[Any]] = {}
        for bank in banks.values():
            if bank.cabinet_id is not None:
                held.setdefault(bank.cabinet_id, []).append(bank)

        taken: set[str] = set()
        for n, item in enumerate(items):
            device_id = item.incoming.device_id
            row = cabinets.get(device_id)
            if row is None or row.state == "retired" or device_id in taken:
                batch.fallbacks.append("not_an_active_cabinet" if device_id not in taken else "same_device")
                continue
            if isinstance(item.msg, Status):
                taken.add(device_id)
                batch.outcomes[n] = Outcome.DONE
                self._status(batch, row, item, item.msg)
                continue
            reason = self._disagreement(row, item, item.msg, banks, slots, held.get(device_id, []))
            if reason is not None:
                batch.fallbacks.append(reason)
                continue
            taken.add(device_id)
            batch.outcomes[n] = Outcome.DONE
            batch.snapshots.append(self._snapshot(row, item, item.msg, banks))

        await self._first_time(session, batch)
        for snapshot in batch.snapshots:
            self._apply_snapshot(batch, cabinets[snapshot.item.incoming.device_id], snapshot)
        await self._write(session, batch)
        after_commit(session, lambda: self._count(batch))
        return batch.outcomes

    def _status(self, batch: _Batch, row: Any, item: _Item, msg: Status) -> None:
        at = item.incoming.received_at
        if item.retained and row.online == msg.online:
            # Replayed by the broker from its retained store on subscribe: not news.
            batch.retained_current += 1
            return
        if msg.online:
            batch.cabinets[row.id] = _CabinetWrite(online=True, seen=at)
            if not row.online:
                self._transition(batch, row, item, True, PresenceReason.CONNECT, "status_online")
        elif row.online:
            batch.cabinets[row.id] = _CabinetWrite(online=False)
            self._transition(batch, row, item, False, PresenceReason.LAST_WILL, "last_will")

    def _transition(self, batch: _Batch, row: Any, item: _Item, online: bool, reason: PresenceReason, why: str) -> None:
        at = item.incoming.received_at
        last_seen = at if online and (row.last_seen_at is None or row.last_seen_at < at) else row.last_seen_at
        batch.changed.setdefault((online, why), []).append(row.id)
        for event in transition_events(
            row.id,
            "cabinet",
            online=online,
            reason=reason,
            at=at,
            last_seen_at=last_seen,
            rssi_dbm=row.rssi_dbm,
            status_reason=why,
        ):
            batch.events.append((event, row.id, item.correlation_id))

    def _disagreement(
        self,
        row: Any,
        item: _Item,
        msg: Hello | Inventory,
        banks: dict[str, Any],
        slots: dict[tuple[str, int], Any],
        held: list[Any],
    ) -> str | None:
        """Why this snapshot needs the one-by-one path, or None when all it changes is presence, the
        snapshot time, firmware and battery levels."""
        if isinstance(msg, Hello) and msg.slot_count != row.slot_count:
            return "slot_count"
        reported_at = self._reported_at(item, msg)
        if row.inventory_at is not None and reported_at <= row.inventory_at:
            return "older_snapshot"
        snapshot = {s.slot: s for s in msg.slots if s.slot <= row.slot_count}
        for number, state in snapshot.items():
            slot = slots.get((row.id, number))
            fault = state.fault.value if state.fault is not None else None
            if slot is None or slot.bank_id != state.bank_id or slot.fault != fault:
                return "slot_changed"
            if state.bank_id is None:
                continue
            bank = banks.get(state.bank_id)
            if bank is None or bank.cabinet_id != row.id or bank.slot_no != number or bank.state == "rented":
                return "bank_moved"
            expected = "faulty" if state.fault == SlotFault.BANK_ERROR else "in_cabinet"
            if bank.state != expected and not bank.operator_hold and bank.state != "retired":
                return "bank_state"
        for bank in held:
            if bank.slot_no in snapshot and snapshot[bank.slot_no].bank_id != bank.id:
                return "bank_missing"
        return None

    def _reported_at(self, item: _Item, msg: Hello | Inventory) -> datetime:
        at, _ = checked_device_time(msg.ts, item.incoming.received_at, not_before=None, max_skew_s=self._max_skew)
        return at

    def _snapshot(self, row: Any, item: _Item, msg: Hello | Inventory, banks: dict[str, Any]) -> _Snapshot:
        states = [s for s in msg.slots if s.slot <= row.slot_count]
        rentable = sum(
            1
            for s in states
            if s.bank_id is not None
            and banks[s.bank_id].state == "in_cabinet"
            and s.fault is None
            and (s.battery_pct or 0) >= self._min_battery
        )
        return _Snapshot(
            item=item,
            msg=msg,
            reported_at=self._reported_at(item, msg),
            present=sum(1 for s in states if s.bank_id is not None),
            rentable=rentable,
            batteries={s.bank_id: s.battery_pct for s in states if s.bank_id is not None},
        )

    async def _first_time(self, session: AsyncSession, batch: _Batch) -> None:
        """Drops the snapshots seen before (by device and msg_id): replays change nothing."""
        if not batch.snapshots:
            return
        keys = [(s.item.incoming.device_id, s.msg.msg_id) for s in batch.snapshots]
        rows = await session.execute(
            FIRST_TIME,
            {
                "devices": [d for d, _ in keys],
                "msg_ids": [m for _, m in keys],
                "at": [s.item.incoming.received_at for s in batch.snapshots],
            },
        )
        new = {(r.device_id, r.msg_id) for r in rows.all()}
        batch.duplicates = [s for s, key in zip(batch.snapshots, keys, strict=True) if key not in new]
        batch.snapshots = [s for s, key in zip(batch.snapshots, keys, strict=True) if key in new]

    def _apply_snapshot(self, batch: _Batch, row: Any, snapshot: _Snapshot) -> None:
        item, msg = snapshot.item, snapshot.msg
        at = item.incoming.received_at
        batch.cabinets[row.id] = _CabinetWrite(
            online=True,
            seen=at,
            inventory_at=snapshot.reported_at,
            firmware=msg.firmware if isinstance(msg, Hello) else None,
        )
        if not row.online:
            reason = PresenceReason.CONNECT if isinstance(msg, Hello) else PresenceReason.MESSAGE
            self._transition(batch, row, item, True, reason, msg.type)
        event = DeviceTelemetryReported(
            device_id=row.id,
            reported_at=snapshot.reported_at,
            received_at=at,
            banks_present=snapshot.present,
            banks_rentable=snapshot.rentable,
            slot_count=row.slot_count,
            region=region_at(row.lat, row.lon, row.region),
        )
        batch.feed.append((event, row.id, item.correlation_id, feed_event_id(row.id, msg.msg_id)))

    async def _write(self, session: AsyncSession, batch: _Batch) -> None:
        if batch.cabinets:
            ids = sorted(batch.cabinets)
            writes = [batch.cabinets[i] for i in ids]
            await session.execute(
                _CABINETS,
                {
                    "ids": ids,
                    "online": [w.online for w in writes],
                    "seen": [w.seen for w in writes],
                    "inventory_at": [w.inventory_at for w in writes],
                    "firmware": [w.firmware for w in writes],
                },
            )
        batteries = {b: (pct, s.item.incoming.received_at) for s in batch.snapshots for b, pct in s.batteries.items()}
        if batteries:
            bank_ids = sorted(batteries)
            await session.execute(
                _BANKS,
                {
                    "ids": bank_ids,
                    "battery": [batteries[b][0] for b in bank_ids],
                    "at": [batteries[b][1] for b in bank_ids],
                },
            )
        if batch.events:
            await self._publish_many(session, batch.events)
        if batch.feed:
            await self._feed(batch.feed)

    @staticmethod
    def _count(batch: _Batch) -> None:
        for snapshot in batch.duplicates:
            incoming = snapshot.item.incoming
            count_rejection(incoming.device_id, incoming.topic, "duplicate", f"msg_id {snapshot.msg.msg_id}")
        for reason in batch.fallbacks:
            STATE_BATCH_FALLBACK.labels(reason).inc()
        RETAINED_STATUS_CURRENT.inc(batch.retained_current)
        # One line per batch and kind of change, not per cabinet (a connect storm; see telemetry/ingest.py).
        for (online, why), cabinets in batch.changed.items():
            log.info(
                "cabinets status changed",
                extra={"cabinets": len(cabinets), "device_ids": cabinets, "online": online, "reason": why},
            )
