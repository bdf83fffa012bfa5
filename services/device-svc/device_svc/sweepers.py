"""Background jobs (run by kit.periodic): fail eject commands past their deadline; mark silent cabinets
and bank modules offline; flag idle banks whose position is overdue (7.2); forget device message ids
older than the replay window (`inbound_messages`, issue 14)."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    DeviceAlarmKind,
    DeviceAlarmRaised,
    EventData,
    PresenceReason,
)
from device_svc.commands.service import EjectService
from device_svc.metrics import ALARMS_RAISED
from device_svc.mqtt.handlers import Publish
from device_svc.presence import transition_events
from device_svc.protocols.registry import ADAPTERS
from device_svc.registry import repository as repo
from kit.db import unit_of_work
from kit.retention import TimeIndexed, prune_by_time

log = logging.getLogger(__name__)

# The replay check of device messages: a (device, msg_id) seen is a copy the device sent again.
INBOUND_MESSAGES = TimeIndexed("inbound_messages", ("device_id", "msg_id"), "received_at")


async def prune_inbound_messages(
    sessionmaker: async_sessionmaker[AsyncSession], *, keep_s: float, batch: int, max_batches: int
) -> int:
    """Forget message ids received more than `keep_s` ago, oldest first, in bounded batches."""
    cutoff = datetime.now(UTC) - timedelta(seconds=keep_s)
    return await prune_by_time(sessionmaker, INBOUND_MESSAGES, older_than=cutoff, batch=batch, max_batches=max_batches)


async def fail_expired_commands(ejects: EjectService) -> datetime | None:
    """Every `sent` command past its deadline, in batches; returns the next deadline still ahead (the
    in-process alarm keeps only the earliest, so later ones rung meanwhile must come from here)."""
    while await ejects.sweep_deadlines() > 0:
        pass
    return await ejects.next_deadline()


def _thresholds(offline_after_s: float) -> dict[str, float]:
    """Silence allowed per protocol: the platform's for its own, an adapter's where its heartbeat is slower."""
    return {
        name: adapter.offline_after_s
        for name, adapter in ADAPTERS.items()
        if adapter.offline_after_s is not None and adapter.offline_after_s != offline_after_s
    }


async def mark_offline(sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, offline_after_s: float) -> int:
    return len(await _mark_offline(sessionmaker, publish, offline_after_s))


async def mark_offline_until_next(
    sessionmaker: async_sessionmaker[AsyncSession],
    publish: Publish,
    offline_after_s: float,
    behind_s: Callable[[], float] = lambda: 0.0,
) -> datetime | None:
    """Mark silent cabinets offline; returns when the next online cabinet falls silent if nothing is heard
    from it (its last message + its protocol's allowed silence), so the sweeper sleeps until then.

    `behind_s`: how far the telemetry intake reads behind its devices (telemetry/ingest.py). A cabinet whose
    heartbeat waits in the broker's queue for us is not silent: that much more silence is allowed, so an
    intake that falls behind does not mark the fleet offline and read it online again, one transition and
    two events per cabinet and round (the flap loop py-spy showed at 14 % of device-svc's CPU, issue 9)."""
    allowance = timedelta(seconds=max(behind_s(), 0.0))
    rows = await _mark_offline(sessionmaker, publish, offline_after_s, allowance)
    if len(rows) >= repo.STALE_BATCH:
        return datetime.now(UTC)  # more to mark
    async with sessionmaker() as session:
        oldest = await repo.oldest_online_cabinet_seen_at(session)
    thresholds = _thresholds(offline_after_s)
    due = [
        seen + timedelta(seconds=thresholds.get(protocol, offline_after_s)) + allowance
        for protocol, seen in oldest.items()
    ]
    return min(due, default=None)


async def _mark_offline(
    sessionmaker: async_sessionmaker[AsyncSession],
    publish: Publish,
    offline_after_s: float,
    allowance: timedelta = timedelta(),
) -> list[Any]:
    now = datetime.now(UTC) - allowance
    by_protocol = {name: now - timedelta(seconds=s) for name, s in _thresholds(offline_after_s).items()}
    async with unit_of_work(sessionmaker) as session:
        rows = await repo.mark_stale_cabinets_offline(
            session, now - timedelta(seconds=offline_after_s), seen_before_by_protocol=by_protocol
        )
        for row in rows:
            log.info(
                "cabinet silent; marked offline", extra={"device_id": row.id, "last_seen_at": str(row.last_seen_at)}
            )
            for event in _silent(row, "cabinet", now + allowance):
                await publish(session, event, row.id)
    return list(rows)


def _silent(row: Any, kind: Literal["cabinet", "bank"], now: datetime) -> list[EventData]:
    return transition_events(
        row.id,
        kind,
        online=False,
        reason=PresenceReason.HEARTBEAT_SILENCE,
        at=now,
        last_seen_at=row.last_seen_at,
        rssi_dbm=row.rssi_dbm,
        status_reason="no_message",
    )


async def mark_banks_offline(
    sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, offline_after_s: float
) -> int:
    """Bank modules silent for `offline_after_s` are shown offline (their last will may be lost),
    each with device.presence.changed."""
    now = datetime.now(UTC)
    async with unit_of_work(sessionmaker) as session:
        rows = await repo.mark_stale_banks_offline(session, now - timedelta(seconds=offline_after_s))
        for row in rows:
            log.info("bank module silent; marked offline", extra={"device_id": row.id})
            for event in _silent(row, "bank", now):
                await publish(session, event, row.id)
    return len(rows)


async def flag_overdue_positions(
    sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, max_age_s: float
) -> list[str]:
    """7.2: an idle bank with a module must give its position at least every `max_age_s`. Flags the
    ones that did not (once, until a position arrives) and emits device.alarm.raised for each."""
    now = datetime.now(UTC)
    async with unit_of_work(sessionmaker) as session:
        rows = await repo.flag_overdue_positions(session, now - timedelta(seconds=max_age_s), now)
        for bank_id, last in rows:
            detail = f"last position {last.isoformat()}" if last is not None else "no position yet"
            ALARMS_RAISED.labels(DeviceAlarmKind.POSITION_OVERDUE.value).inc()
            log.warning("bank position overdue", extra={"device_id": bank_id, "detail": detail})
            event = DeviceAlarmRaised(
                device_id=bank_id, kind=DeviceAlarmKind.POSITION_OVERDUE, at=now, detail=detail, device_kind="bank"
            )
            await publish(session, event, bank_id)
    return [bank_id for bank_id, _ in rows]


async def sweep_banks(
    sessionmaker: async_sessionmaker[AsyncSession],
    publish: Publish,
    *,
    offline_after_s: float,
    position_max_age_s: float,
) -> None:
    await mark_banks_offline(sessionmaker, publish, offline_after_s)
    await flag_overdue_positions(sessionmaker, publish, position_max_age_s)
