"""Maintenance tasks for dispatchers and field staff."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from contracts.events import MaintenanceCause, MaintenanceTaskStatus
from device_svc import audit_states as states
from device_svc.maintenance import service
from device_svc.maintenance.lifecycle import Action
from device_svc.maintenance.schemas import AssignRequest, CloseRequest, StartRequest, SyncResult, TaskList, TaskOut
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.inputs import INT64_MAX

Staff = Annotated[Principal, Depends(require_permission("devices:read"))]
FieldStaff = Annotated[Principal, Depends(require_permission("devices:maintain"))]
Dispatcher = Annotated[Principal, Depends(require_permission("maintenance:dispatch"))]

router = APIRouter(prefix="/v1/ops/tasks", tags=["maintenance tasks"])


@router.get("", response_model=TaskList)
async def tasks(
    _: Staff,
    session: SessionDep,
    status: Annotated[list[MaintenanceTaskStatus] | None, Query()] = None,
    cause: MaintenanceCause | None = None,
    device_id: Annotated[str | None, Query(max_length=64)] = None,
    cabinet_id: Annotated[str | None, Query(max_length=64)] = None,
    assignee: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> TaskList:
    """Tasks oldest first; `status` may repeat (`?status=open&status=assigned`)."""
    items = await service.search(
        session,
        statuses=[s.value for s in status or []],
        cause=cause.value if cause else None,
        device_id=device_id,
        cabinet_id=cabinet_id,
        assignee=assignee,
        limit=limit,
        offset=offset,
    )
    return TaskList(items=items)


@router.post("/scan", response_model=SyncResult, dependencies=[audited("maintenance_task.scan", "maintenance_task")])
async def scan(_: Dispatcher, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit) -> SyncResult:
    """Open tasks for every current condition now (the periodic pass does the same every
    `MAINTENANCE_SCAN_INTERVAL_S`)."""
    opened = await service.open_tasks(session, runtime, runtime.extras["task_rules"])
    audit.note(before={}, after={"opened": opened})
    return SyncResult(opened=opened)


@router.get("/{task_id}", response_model=TaskOut)
async def task(task_id: uuid.UUID, _: Staff, session: SessionDep) -> TaskOut:
    """One task with its history (who moved it when, with what note)."""
    return await service.get(session, task_id)


@router.post(
    "/{task_id}/assign",
    response_model=TaskOut,
    dependencies=[audited("maintenance_task.assign", "maintenance_task", "task_id", state=states.TASK)],
)
async def assign(
    task_id: uuid.UUID, body: AssignRequest, who: Dispatcher, session: SessionDep, runtime: RuntimeDep
) -> TaskOut:
    return await service.act(session, runtime, task_id, Action.ASSIGN, who.subject, body.note, body.assignee)


@router.post(
    "/{task_id}/start",
    response_model=TaskOut,
    dependencies=[audited("maintenance_task.start", "maintenance_task", "task_id", state=states.TASK)],
)
async def start(
    task_id: uuid.UUID, body: StartRequest, who: FieldStaff, session: SessionDep, runtime: RuntimeDep
) -> TaskOut:
    return await service.act(session, runtime, task_id, Action.START, who.subject, body.note)


@router.post(
    "/{task_id}/done",
    response_model=TaskOut,
    dependencies=[audited("maintenance_task.done", "maintenance_task", "task_id", state=states.TASK)],
)
async def done(
    task_id: uuid.UUID, body: CloseRequest, who: FieldStaff, session: SessionDep, runtime: RuntimeDep
) -> TaskOut:
    return await service.act(session, runtime, task_id, Action.DONE, who.subject, body.note)


@router.post(
    "/{task_id}/cancel",
    response_model=TaskOut,
    dependencies=[audited("maintenance_task.cancel", "maintenance_task", "task_id", state=states.TASK)],
)
async def cancel(
    task_id: uuid.UUID, body: CloseRequest, who: Dispatcher, session: SessionDep, runtime: RuntimeDep
) -> TaskOut:
    return await service.act(session, runtime, task_id, Action.CANCEL, who.subject, body.note)
