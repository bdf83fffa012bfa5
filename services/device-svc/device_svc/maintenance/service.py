"""Maintenance tasks (6.3.9, 7.4.1): opened from alarms, users' fault reports, faulty slots, silent
cabinets and the cycle/health rule, at most one open per device and cause; staff move them through
`lifecycle` and every step is an event on `device.maintenance.v1`."""

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import (
    BankFaultReported,
    MaintenanceCause,
    MaintenanceTaskOpened,
    MaintenanceTaskStatus,
    MaintenanceTaskStatusChanged,
)
from device_svc.maintenance import repository as repo
from device_svc.maintenance.lifecycle import OPEN, Action, apply
from device_svc.maintenance.schemas import TaskOut, TaskStep
from device_svc.models import MaintenanceTask
from kit.app import Runtime
from kit.errors import NotFound

log = logging.getLogger(__name__)


class TaskNotFound(NotFound):
    code = "maintenance_task_not_found"
    title = "No such maintenance task"


@dataclass(frozen=True)
class TaskRules:
    cycle_budget: int = 1000
    cycle_warning_ratio: float = 0.95
    min_health_pct: int = 80
    cabinet_offline_after_s: float = 1800.0
    batch: int = 1000

    @property
    def cycles(self) -> int:
        return int(self.cycle_budget * self.cycle_warning_ratio)


async def _announce(session: AsyncSession, runtime: Runtime, opened: Sequence[repo.Opened]) -> None:
    if not opened:
        return
    events = [
        (
            MaintenanceTaskOpened(
                task_id=t.id,
                device_id=t.device_id,
                device_kind="bank" if t.device_kind == "bank" else "cabinet",
                cause=MaintenanceCause(t.cause),
                detail=t.detail,
                cabinet_id=t.cabinet_id,
                at=t.opened_at,
            ),
            str(t.id),
            None,
        )
        for t in opened
    ]
    await runtime.publish_many(session, events)
    log.info("maintenance tasks opened", extra={"count": len(opened)})


async def open_tasks(session: AsyncSession, runtime: Runtime, rules: TaskRules, now: datetime | None = None) -> int:
    """One pass over every source; idempotent (an open task for the same device and cause is kept)."""
    now = now or datetime.now(UTC)
    opened = await repo.open_from_sources(
        session,
        now=now,
        cycles=rules.cycles,
        min_health=rules.min_health_pct,
        offline_before=now - timedelta(seconds=rules.cabinet_offline_after_s),
        limit=rules.batch,
    )
    await _announce(session, runtime, opened)
    return len(opened)


async def on_fault_reported(session: AsyncSession, runtime: Runtime, envelope: Envelope) -> None:
    """A user's report opens its task at once (the periodic pass would find it too)."""
    data = envelope.data
    assert isinstance(data, BankFaultReported)
    opened = await repo.open_one(
        session,
        device_id=data.bank_id,
        device_kind="bank",
        cause=MaintenanceCause.FAULT_REPORT.value,
        detail=f"reported by a user: {data.kind.value.replace('_', ' ')}",
        cabinet_id=data.cabinet_id,
        since=data.at,
        now=datetime.now(UTC),
    )
    await _announce(session, runtime, [opened] if opened else [])


def task_out(task: MaintenanceTask, history: Sequence[TaskStep] | None = None) -> TaskOut:
    out = TaskOut.model_validate(task, from_attributes=True)
    return out.model_copy(update={"history": list(history)}) if history is not None else out


async def search(session: AsyncSession, **filters: object) -> list[TaskOut]:
    return [task_out(t) for t in await repo.search(session, **filters)]  # type: ignore[arg-type]


async def get(session: AsyncSession, task_id: uuid.UUID) -> TaskOut:
    task = await repo.get(session, task_id)
    if task is None:
        raise TaskNotFound(f"Maintenance task {task_id} does not exist")
    steps = [TaskStep.model_validate(h, from_attributes=True) for h in await repo.history(session, task_id)]
    return task_out(task, steps)


async def act(
    session: AsyncSession,
    runtime: Runtime,
    task_id: uuid.UUID,
    action: Action,
    by: str,
    note: str = "",
    assignee: str | None = None,
) -> TaskOut:
    task = await repo.get(session, task_id, for_update=True)
    if task is None:
        raise TaskNotFound(f"Maintenance task {task_id} does not exist")
    now = datetime.now(UTC)
    before = apply(task, action, now)
    if action is Action.ASSIGN:
        task.assignee = assignee
    elif action is Action.START and task.assignee is None:
        task.assignee = by  # field staff take an open task themselves
    if note and action in (Action.DONE, Action.CANCEL):
        task.note = note
    repo.add_history(session, task, action.value, before.value, by, note, now)
    await runtime.publish(
        session,
        MaintenanceTaskStatusChanged(
            task_id=task.id,
            device_id=task.device_id,
            cause=MaintenanceCause(task.cause),
            from_status=before,
            to_status=MaintenanceTaskStatus(task.status),
            action=action.value,
            by=by,
            assignee=task.assignee,
            note=note,
            at=now,
        ),
        key=str(task.id),
    )
    await session.flush()
    log.info("maintenance task moved", extra={"task_id": str(task.id), "action": action.value, "by": by})
    return task_out(task)


async def close_for_alarm(
    session: AsyncSession, runtime: Runtime, device_id: str, cause: str, by: str, note: str
) -> list[uuid.UUID]:
    """An alarm resolved by staff: its open task for the same device and cause is done with the note,
    through the lifecycle (started first when nobody had started it), each step in the history."""
    closed: list[uuid.UUID] = []
    for task in await repo.search(
        session,
        statuses=[s.value for s in OPEN],
        cause=cause,
        device_id=device_id,
        cabinet_id=None,
        assignee=None,
        limit=10,
        offset=0,
    ):
        if task.status != MaintenanceTaskStatus.IN_PROGRESS.value:
            await act(session, runtime, task.id, Action.START, by)
        await act(session, runtime, task.id, Action.DONE, by, note)
        closed.append(task.id)
    return closed
