"""SQL of maintenance tasks. Never commits."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import MaintenanceTask, MaintenanceTaskHistory


@dataclass(frozen=True)
class Opened:
    id: uuid.UUID
    device_id: str
    device_kind: str
    cause: str
    detail: str
    cabinet_id: str | None
    opened_at: datetime


# Every source of tasks as rows (device_id, device_kind, cause, detail, cabinet_id, since): the condition
# and when it arose. A task is opened for a row unless one for that device and cause is open, or was
# closed (done, cancelled) after the condition arose: each occurrence is raised once.
SOURCES = """
    SELECT b.id, 'bank', 'moved_while_idle', 'moved while not rented', b.cabinet_id, b.moved_alarm_at
      FROM banks b WHERE b.moved_alarm_at IS NOT NULL AND b.state <> 'retired'
    UNION ALL
    SELECT b.id, 'bank', 'high_temperature', coalesce(b.temperature_c::text, '?') || ' °C', b.cabinet_id,
           b.high_temp_alarm_at
      FROM banks b WHERE b.high_temp_alarm_at IS NOT NULL AND b.state <> 'retired'
    UNION ALL
    SELECT b.id, 'bank', 'position_overdue', 'no position since '
           || coalesce(to_char(b.position_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'), 'ever'), b.cabinet_id,
           b.position_overdue_at
      FROM banks b WHERE b.position_overdue_at IS NOT NULL AND b.state <> 'retired'
    UNION ALL
    SELECT b.id, 'bank', 'maintenance_due', 'cycles ' || coalesce(b.charge_cycles::text, '?')
           || ', health ' || coalesce(b.health_pct::text, '?') || '%', b.cabinet_id,
           coalesce(b.maintenance_due_at, '-infinity'::timestamptz)
      FROM banks b
     WHERE b.state <> 'retired'
       AND (b.maintenance_due_at IS NOT NULL OR b.charge_cycles >= :cycles OR b.health_pct < :min_health)
    UNION ALL
    SELECT b.id, 'bank', 'fault_report', 'reported broken by a user', b.cabinet_id, b.reported_fault_at
      FROM banks b WHERE b.reported_fault_at IS NOT NULL AND b.state <> 'retired'
    UNION ALL
    SELECT b.id, 'bank', 'bank_faulty', 'state faulty', b.cabinet_id, b.state_changed_at
      FROM banks b WHERE b.state = 'faulty'
    UNION ALL
    SELECT s.cabinet_id, 'cabinet', 'slot_fault',
           left(string_agg('slot ' || s.slot_no || ': ' || s.fault, ', ' ORDER BY s.slot_no), 200), s.cabinet_id,
           max(s.updated_at)
      FROM slots s JOIN cabinets c ON c.id = s.cabinet_id
     WHERE s.fault IS NOT NULL AND c.state <> 'retired'
     GROUP BY s.cabinet_id
    UNION ALL
    SELECT c.id, 'cabinet', 'cabinet_offline', 'silent since '
           || to_char(c.last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'), c.id, c.last_seen_at
      FROM cabinets c
     WHERE NOT c.online AND c.state = 'active' AND c.last_seen_at < :offline_before
"""

_OPEN = """
WITH source (device_id, device_kind, cause, detail, cabinet_id, since) AS ({source}),
pending AS (
    SELECT * FROM source s
     WHERE NOT EXISTS (
        SELECT 1 FROM maintenance_tasks t
         WHERE t.device_id = s.device_id AND t.cause = s.cause
           AND (t.status IN ('open', 'assigned', 'in_progress') OR t.closed_at >= s.since))
     LIMIT :limit
),
new AS (
    INSERT INTO maintenance_tasks (id, device_id, device_kind, cause, detail, cabinet_id, status, opened_at, updated_at)
    SELECT gen_random_uuid(), device_id, device_kind, cause, left(detail, 200), cabinet_id, 'open', :now, :now
      FROM pending
    ON CONFLICT (device_id, cause) WHERE status IN ('open', 'assigned', 'in_progress') DO NOTHING
    RETURNING id, device_id, device_kind, cause, detail, cabinet_id, opened_at
),
history AS (
    INSERT INTO maintenance_task_history (task_id, action, from_status, to_status, by, note, at)
    SELECT id, 'open', NULL, 'open', 'system', detail, opened_at FROM new
)
SELECT id, device_id, device_kind, cause, detail, cabinet_id, opened_at FROM new
"""
OPEN_FROM_SOURCES = text(_OPEN.format(source=SOURCES))
OPEN_ONE = text(
    _OPEN.format(
        source="SELECT CAST(:device_id AS text), CAST(:device_kind AS text), CAST(:cause AS text), "
        "CAST(:detail AS text), CAST(:cabinet_id AS text), CAST(:since AS timestamptz)"
    )
)


async def open_from_sources(
    session: AsyncSession, *, now: datetime, cycles: int, min_health: int, offline_before: datetime, limit: int
) -> list[Opened]:
    """Open a task for every condition that has none open; the tasks opened (at most `limit` sources)."""
    params = {"now": now, "cycles": cycles, "min_health": min_health, "offline_before": offline_before, "limit": limit}
    rows = await session.execute(OPEN_FROM_SOURCES, params)
    return [Opened(*row) for row in rows.all()]


async def open_one(
    session: AsyncSession,
    *,
    device_id: str,
    device_kind: str,
    cause: str,
    detail: str,
    cabinet_id: str | None,
    since: datetime,
    now: datetime,
) -> Opened | None:
    """Open one task for a condition that arose at `since`, unless one covers it already; None then."""
    params: dict[str, Any] = {
        "device_id": device_id,
        "device_kind": device_kind,
        "cause": cause,
        "detail": detail,
        "cabinet_id": cabinet_id,
        "since": since,
        "now": now,
        "limit": 1,
    }
    row = (await session.execute(OPEN_ONE, params)).first()
    return Opened(*row) if row is not None else None


async def get(session: AsyncSession, task_id: uuid.UUID, *, for_update: bool = False) -> MaintenanceTask | None:
    stmt = select(MaintenanceTask).where(MaintenanceTask.id == task_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def search(
    session: AsyncSession,
    *,
    statuses: Sequence[str],
    cause: str | None,
    device_id: str | None,
    cabinet_id: str | None,
    assignee: str | None,
    limit: int,
    offset: int,
) -> Sequence[MaintenanceTask]:
    stmt = select(MaintenanceTask)
    if statuses:
        stmt = stmt.where(MaintenanceTask.status.in_(statuses))
    if cause is not None:
        stmt = stmt.where(MaintenanceTask.cause == cause)
    if device_id is not None:
        stmt = stmt.where(MaintenanceTask.device_id == device_id)
    if cabinet_id is not None:
        stmt = stmt.where(MaintenanceTask.cabinet_id == cabinet_id)
    if assignee is not None:
        stmt = stmt.where(MaintenanceTask.assignee == assignee)
    stmt = stmt.order_by(MaintenanceTask.opened_at, MaintenanceTask.id).limit(limit).offset(offset)
    return (await session.execute(stmt)).scalars().all()


def add_history(
    session: AsyncSession, task: MaintenanceTask, action: str, from_status: str, by: str, note: str, at: datetime
) -> None:
    session.add(
        MaintenanceTaskHistory(
            task_id=task.id, action=action, from_status=from_status, to_status=task.status, by=by, note=note, at=at
        )
    )


async def history(session: AsyncSession, task_id: uuid.UUID) -> Sequence[MaintenanceTaskHistory]:
    stmt = (
        select(MaintenanceTaskHistory)
        .where(MaintenanceTaskHistory.task_id == task_id)
        .order_by(MaintenanceTaskHistory.id)
    )
    return (await session.execute(stmt)).scalars().all()
