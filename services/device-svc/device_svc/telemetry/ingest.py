"""Telemetry ingestion in micro-batches: heartbeats (cabinets and bank modules) and bank reports.

Telemetry is most of the device traffic. Instead of one transaction per message (a row lock, an
`inbound_messages` insert, an outbox insert and a commit each), messages queue in a micro-batcher
(telemetry/batching.py) and each batch is one transaction:

1. the devices of the batch, locked in id order (one statement; no two writers deadlock);
2. the replay check for the whole batch: one `INSERT … SELECT unnest(…) ON CONFLICT DO NOTHING
   RETURNING`; what it does not return was seen before and is dropped;
3. presence (last seen, signal), the banks' current state (only by a report newer by device time
   than the stored one), alarms, and online transitions, each one set-based statement;
4. presence, alarm and rejection events in one multi-row outbox insert;
5. the telemetry itself (the data team's feed, the bulk of the volume) straight to Kafka, before the
   commit: a device's report is a fact whatever we make of it, so it needs no outbox row, no relay
   query and no published mark. Its event id is derived from the device and msg_id, so a batch
   retried after Kafka acknowledged but before the commit publishes copies that consumers drop as
   duplicates (at least once, nothing lost). Kafka unreachable fails the batch like the database:
   nothing is acknowledged and the messages are handled again.

It all commits together, so a crash loses nothing that was acknowledged as recorded, and a replay is
never half-applied.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import (
    DeviceAlarmRaised,
    DeviceMessageRejected,
    DeviceTelemetryReported,
    EventData,
    PresenceReason,
)
from contracts.mqtt import BankReport, Heartbeat, Ring
from contracts.regions import region_at
from device_svc.clock import checked_device_time, datetime_to_ms
from device_svc.metrics import ALARMS_RAISED, COMMANDS_DOWN, TELEMETRY_BATCH_SIZE
from device_svc.models import Bank
from device_svc.mqtt.downlink import Downlink
from device_svc.mqtt.incoming import Incoming, count_rejection
from device_svc.presence import transition_events
from device_svc.telemetry.batching import MicroBatcher
from device_svc.telemetry.service import BankRules, alarm_changes
from device_svc.telemetry.store import BankState, write_states
from kit.correlation import get_correlation_id
from kit.db import after_commit

log = logging.getLogger(__name__)

PublishMany = Callable[[AsyncSession, Sequence[tuple[EventData, str, str | None]]], Awaitable[list[Envelope]]]
# Publishes `(data, key, correlation id, event id)` straight to Kafka; returns once Kafka acknowledged.
FeedEvent = tuple[EventData, str, str | None, uuid.UUID]
Feed = Callable[[Sequence[FeedEvent]], Awaitable[None]]
_FEED_NAMESPACE = uuid.UUID("6f1d2c3e-7a4b-4f0e-9c1d-2b3a4c5d6e7f")


def feed_event_id(device_id: str, msg_id: str) -> uuid.UUID:
    """The same device message always yields the same telemetry event id."""
    return uuid.uuid5(_FEED_NAMESPACE, f"{device_id}/{msg_id}")


TelemetryMessage = Heartbeat | BankReport
# A lag measured this long ago still counts (or as long as the lag itself, when longer).
_LAG_FRESH_S = 10.0

_LOCK_CABINETS = text(
    "SELECT id, state, online, last_seen_at, rssi_dbm FROM cabinets WHERE id = ANY(CAST(:ids AS varchar[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)
_LOCK_BANKS = text(
    "SELECT id, state, online, last_seen_at, rssi_dbm, telemetry_at, cabinet_id, slot_no, moved_alarm_at, "
    "high_temp_alarm_at, maintenance_due_at FROM banks WHERE id = ANY(CAST(:ids AS varchar[])) "
    "ORDER BY id FOR NO KEY UPDATE"
)
# The replay check of a batch (also telemetry/snapshots.py): returns the (device, msg_id) pairs seen first.
FIRST_TIME = text(
    """
    INSERT INTO inbound_messages (device_id, msg_id, received_at)
    SELECT * FROM unnest(CAST(:devices AS varchar[]), CAST(:msg_ids AS varchar[]), CAST(:at AS timestamptz[]))
    ON CONFLICT DO NOTHING
    RETURNING device_id, msg_id
    """
)
# The signal reading is kept only from a heartbeat at least as new (device time) as the stored one.
_CABINET_PRESENCE = text(
    """
    UPDATE cabinets AS c
       SET online = true,
           last_seen_at = greatest(c.last_seen_at, v.seen_at),
           rssi_dbm = CASE WHEN v.rssi IS NOT NULL AND (c.rssi_at IS NULL OR c.rssi_at <= v.at)
                           THEN v.rssi ELSE c.rssi_dbm END,
           rssi_at = CASE WHEN v.rssi IS NOT NULL AND (c.rssi_at IS NULL OR c.rssi_at <= v.at)
                          THEN v.at ELSE c.rssi_at END
      FROM unnest(CAST(:ids AS varchar[]), CAST(:seen AS timestamptz[]), CAST(:rssi AS int[]),
                  CAST(:at AS timestamptz[])) AS v(id, seen_at, rssi, at)
     WHERE c.id = v.id
    """
)
_BANK_PRESENCE = text(
    """
    UPDATE banks AS b
       SET online = true,
           has_module = true,
           last_seen_at = greatest(b.last_seen_at, v.seen_at),
           rssi_dbm = CASE WHEN v.rssi IS NOT NULL AND (b.last_seen_at IS NULL OR b.last_seen_at <= v.seen_at)
                           THEN v.rssi ELSE b.rssi_dbm END
      FROM unnest(CAST(:ids AS varchar[]), CAST(:seen AS timestamptz[]), CAST(:rssi AS int[]))
           AS v(id, seen_at, rssi)
     WHERE b.id = v.id
    """
)


@dataclass
class _Item:
    incoming: Incoming
    msg: TelemetryMessage
    correlation_id: str | None


@dataclass
class _Batch:
    """What one batch writes; built from the locked rows, then applied."""

    events: list[tuple[EventData, str, str | None]] = field(default_factory=list)
    feed: list[FeedEvent] = field(default_factory=list)
    rejections: list[tuple[_Item, str, str]] = field(default_factory=list)
    cabinet_presence: dict[str, tuple[datetime, int | None, datetime]] = field(default_factory=dict)
    bank_presence: dict[str, tuple[datetime, int | None]] = field(default_factory=dict)
    states: dict[str, BankState] = field(default_factory=dict)
    alarm_columns: dict[str, dict[str, datetime | None]] = field(default_factory=dict)
    alarms_raised: list[str] = field(default_factory=list)
    rings: list[str] = field(default_factory=list)
    came_online: list[str] = field(default_factory=list)


class TelemetryIngest:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish_many: PublishMany,
        downlink: Downlink,
        rules: BankRules,
        *,
        feed: Feed,
        max_rows: int = 500,
        workers: int = 2,
        attempts: int = 3,
    ) -> None:
        self._publish_many = publish_many
        self._feed = feed
        self._downlink = downlink
        self._rules = rules
        self._lag: tuple[float, float] = (0.0, 0.0)  # (seconds behind, monotonic time measured)
        self._batcher: MicroBatcher[_Item, None] = MicroBatcher(
            "telemetry",
            sessionmaker,
            self._apply,
            size=TELEMETRY_BATCH_SIZE,
            max_rows=max_rows,
            workers=workers,
            attempts=attempts,
            # Handed over without a device lane (mqtt/handlers.py): a batch still holds one message per device,
            # as the lanes ensured, because the batch reads each device's state once (alarms, presence).
            one_per_key=lambda item: item.incoming.device_id,
        )

    @property
    def pending(self) -> int:
        return self._batcher.pending

    async def submit(self, incoming: Incoming, msg: TelemetryMessage) -> None:
        """Queue one validated message; returns when its batch committed (raises if it could not)."""
        await self._batcher.submit(_Item(incoming, msg, get_correlation_id()))

    def submit_nowait(
        self, incoming: Incoming, msg: TelemetryMessage, correlation_id: str | None
    ) -> "asyncio.Future[None]":
        """Queue one validated message; the future completes when its batch committed (or failed)."""
        return self._batcher.submit_nowait(_Item(incoming, msg, correlation_id))

    @property
    def behind_s(self) -> float:
        """How far behind its devices the intake reads: the median, over the last batch, of device time to
        commit, while batches keep committing; 0 when it keeps up or nothing committed for a while. A
        device sending what it kept while offline is one of many in a busy batch, so the median is not
        moved by it. The offline sweeper allows this much more silence (sweepers.py): a cabinet must not be
        shown offline because device-svc is slow to read it."""
        lag, at = self._lag
        if lag <= 0 or time.monotonic() - at > max(lag, _LAG_FRESH_S):
            return 0.0
        return lag

    def _note_lag(self, items: list[_Item]) -> None:
        now = datetime.now(UTC)
        lags = sorted((now - self._device_time(item)).total_seconds() for item in items)
        self._lag = (lags[len(lags) // 2] if lags else 0.0, time.monotonic())

    async def run(self) -> None:
        await self._batcher.run()

    async def close(self) -> None:
        """Write what is still queued (shutdown)."""
        await self._batcher.close()

    @staticmethod
    def _count(batch: "_Batch") -> None:
        for item, reason, detail in batch.rejections:
            count_rejection(item.incoming.device_id, item.incoming.topic, reason, detail)
        for kind in batch.alarms_raised:
            ALARMS_RAISED.labels(kind).inc()
        if batch.came_online:
            # One line per batch, not per device: a connect storm brings thousands online at once, and a log
            # record each was 4-7 % of device-svc's CPU in it (issue 9). The presence events carry each one.
            log.info(
                "devices online",
                extra={"devices": len(batch.came_online), "device_ids": batch.came_online, "reason": "message"},
            )

    async def _apply(self, session: AsyncSession, items: list[_Item]) -> list[None]:
        batch = _Batch()
        ids = sorted({item.incoming.device_id for item in items})
        cabinets = {r.id: r for r in (await session.execute(_LOCK_CABINETS, {"ids": ids})).all()}
        bank_ids = [i for i in ids if i not in cabinets]
        banks = {r.id: r for r in (await session.execute(_LOCK_BANKS, {"ids": bank_ids})).all()} if bank_ids else {}

        candidates: list[_Item] = []
        for item in items:
            device_id = item.incoming.device_id
            device = cabinets.get(device_id) or banks.get(device_id)
            if device is None:
                self._reject(batch, item, "unknown_device")
            elif device.state == "retired":
                self._reject(batch, item, "retired_device")
            elif device_id in cabinets and isinstance(item.msg, BankReport):
                self._reject(batch, item, "invalid_payload", "a cabinet cannot send bank_report")
            else:
                candidates.append(item)

        accepted = await self._first_time(session, batch, candidates)
        online_now: set[str] = set()
        for item in accepted:
            device_id = item.incoming.device_id
            if device_id in cabinets:
                self._cabinet(batch, cabinets[device_id], item, online_now)
            else:
                self._bank(batch, banks[device_id], item, online_now)

        await self._write(session, batch)
        for bank_id in batch.rings:
            self._ring_after_commit(session, bank_id)
        after_commit(session, lambda: self._count(batch))
        after_commit(session, lambda: self._note_lag(accepted))
        return [None] * len(items)

    async def _first_time(self, session: AsyncSession, batch: _Batch, candidates: list[_Item]) -> list[_Item]:
        """The candidates not seen before (by device and msg_id); the others are replays."""
        firsts: dict[tuple[str, str], _Item] = {}
        for item in candidates:
            key = (item.incoming.device_id, item.msg.msg_id)
            if key in firsts:
                self._reject(batch, item, "duplicate", f"msg_id {item.msg.msg_id}", emit=False)
            else:
                firsts[key] = item
        if not firsts:
            return []
        keys = list(firsts)
        rows = await session.execute(
            FIRST_TIME,
            {
                "devices": [d for d, _ in keys],
                "msg_ids": [m for _, m in keys],
                "at": [firsts[k].incoming.received_at for k in keys],
            },
        )
        new = {(r.device_id, r.msg_id) for r in rows.all()}
        accepted = []
        for key, item in firsts.items():
            if key in new:
                accepted.append(item)
            else:
                self._reject(batch, item, "duplicate", f"msg_id {item.msg.msg_id}", emit=False)
        return accepted

    def _reject(self, batch: _Batch, item: _Item, reason: str, detail: str = "", *, emit: bool = True) -> None:
        batch.rejections.append((item, reason, detail))
        if emit:
            incoming = item.incoming
            event = DeviceMessageRejected(
                device_id=incoming.device_id, mqtt_topic=incoming.topic[:200], reason=reason, at=incoming.received_at
            )
            batch.events.append((event, incoming.device_id, item.correlation_id))

    def _device_time(self, item: _Item) -> datetime:
        at, _ = checked_device_time(
            item.msg.ts, item.incoming.received_at, not_before=None, max_skew_s=self._rules.max_clock_skew_s
        )
        return at

    def _came_online(
        self, batch: _Batch, kind: str, row: Any, item: _Item, online_now: set[str], rssi: int | None
    ) -> None:
        device_id, at = item.incoming.device_id, item.incoming.received_at
        if row.online or device_id in online_now:
            return
        online_now.add(device_id)
        batch.came_online.append(device_id)
        for event in transition_events(
            device_id,
            "cabinet" if kind == "cabinet" else "bank",
            online=True,
            reason=PresenceReason.MESSAGE,
            at=at,
            last_seen_at=at if row.last_seen_at is None else max(at, row.last_seen_at),
            rssi_dbm=rssi if rssi is not None else row.rssi_dbm,
            status_reason=item.msg.type,
        ):
            batch.events.append((event, device_id, item.correlation_id))

    def _cabinet(self, batch: _Batch, row: Any, item: _Item, online_now: set[str]) -> None:
        msg = item.msg
        assert isinstance(msg, Heartbeat)
        device_id, received = item.incoming.device_id, item.incoming.received_at
        reported_at = self._device_time(item)
        self._came_online(batch, "cabinet", row, item, online_now, msg.rssi_dbm)
        batch.cabinet_presence[device_id] = (received, msg.rssi_dbm, reported_at)
        event = DeviceTelemetryReported(
            device_id=device_id, reported_at=reported_at, received_at=received, rssi_dbm=msg.rssi_dbm
        )
        batch.feed.append((event, device_id, item.correlation_id, feed_event_id(device_id, msg.msg_id)))

    def _bank(self, batch: _Batch, row: Any, item: _Item, online_now: set[str]) -> None:
        msg = item.msg
        device_id, received = item.incoming.device_id, item.incoming.received_at
        rssi = msg.rssi_dbm if isinstance(msg, Heartbeat) else None
        self._came_online(batch, "bank", row, item, online_now, rssi)
        batch.bank_presence[device_id] = (received, rssi)
        if isinstance(msg, BankReport):
            self._report(batch, row, item, msg)

    def _report(self, batch: _Batch, row: Any, item: _Item, msg: BankReport) -> None:
        device_id, received = item.incoming.device_id, item.incoming.received_at
        reported_at = self._device_time(item)
        position = msg.position
        lat, lon = (position.lat, position.lon) if position is not None else (None, None)
        event = DeviceTelemetryReported(
            device_id=device_id,
            reported_at=reported_at,
            received_at=received,
            device_kind="bank",
            battery_pct=msg.battery_pct,
            charging=msg.charging,
            lat=lat,
            lon=lon,
            temperature_c=msg.temperature_c,
            charge_cycles=msg.charge_cycles,
            health_pct=msg.health_pct,
            charge_mah_total=msg.charge_mah_total,
            discharge_mah_total=msg.discharge_mah_total,
            moving=msg.moving,
            region=region_at(lat, lon) if lat is not None and lon is not None else None,
        )
        batch.feed.append((event, device_id, item.correlation_id, feed_event_id(device_id, msg.msg_id)))
        if row.telemetry_at is not None and reported_at <= row.telemetry_at:
            # A late report: in the feed, but it neither changes state nor raises alarms.
            log.info("late bank report", extra={"device_id": device_id})
            return
        state = BankState(
            at=reported_at,
            battery_pct=msg.battery_pct,
            charging=msg.charging,
            lat=lat,
            lon=lon,
            position_at=reported_at if position is not None else None,
            temperature_c=msg.temperature_c,
            charge_cycles=msg.charge_cycles,
            health_pct=msg.health_pct,
            charge_mah_total=msg.charge_mah_total,
            discharge_mah_total=msg.discharge_mah_total,
        )
        older = batch.states.get(device_id)
        batch.states[device_id] = state if older is None else state.merged_over(older)
        changes = alarm_changes(self._rules, row, msg)
        columns = batch.alarm_columns.setdefault(device_id, {})
        for column in changes.cleared:
            columns[column] = None
        for alarm in changes.raised:
            columns[alarm.column] = received
            batch.alarms_raised.append(alarm.kind.value)
            log.warning(
                "device alarm", extra={"device_id": device_id, "kind": alarm.kind.value, "detail": alarm.detail}
            )
            raised = DeviceAlarmRaised(
                device_id=device_id, kind=alarm.kind, at=received, detail=alarm.detail, device_kind="bank"
            )
            batch.events.append((raised, device_id, item.correlation_id))
        if changes.ring:
            batch.rings.append(device_id)
        if not columns:
            del batch.alarm_columns[device_id]

    async def _write(self, session: AsyncSession, batch: _Batch) -> None:
        if batch.cabinet_presence:
            ids = sorted(batch.cabinet_presence)
            rows = [batch.cabinet_presence[i] for i in ids]
            await session.execute(
                _CABINET_PRESENCE,
                {"ids": ids, "seen": [r[0] for r in rows], "rssi": [r[1] for r in rows], "at": [r[2] for r in rows]},
            )
        if batch.bank_presence:
            ids = sorted(batch.bank_presence)
            rows2 = [batch.bank_presence[i] for i in ids]
            await session.execute(
                _BANK_PRESENCE, {"ids": ids, "seen": [r[0] for r in rows2], "rssi": [r[1] for r in rows2]}
            )
        if batch.states:
            await write_states(session, {}, batch.states)
        for bank_id, columns in sorted(batch.alarm_columns.items()):
            await session.execute(
                update(Bank).where(Bank.id == bank_id).values(columns).execution_options(synchronize_session=False)
            )
        if batch.events:
            await self._publish_many(session, batch.events)
        if batch.feed:
            await self._feed(batch.feed)

    def _ring_after_commit(self, session: AsyncSession, bank_id: str) -> None:
        now = datetime.now(UTC)
        ring = Ring(
            cmd_id=str(uuid.uuid4()),
            expires_at=datetime_to_ms(now + timedelta(seconds=30)),
            duration_s=self._rules.ring_duration_s,
        )

        async def send() -> None:
            try:
                await self._downlink.send(bank_id, ring)
                COMMANDS_DOWN.labels("ring", "sent").inc()
            except Exception as exc:
                COMMANDS_DOWN.labels("ring", "not_sent").inc()
                log.warning("ring not sent", extra={"device_id": bank_id, "error": repr(exc)})

        after_commit(session, send)
