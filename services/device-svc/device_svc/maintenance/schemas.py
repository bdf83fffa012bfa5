"""Maintenance tasks as staff see and move them."""

import uuid
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from contracts.events import MaintenanceCause, MaintenanceTaskStatus


class TaskStep(BaseModel):
    action: str
    from_status: MaintenanceTaskStatus | None
    to_status: MaintenanceTaskStatus
    by: str
    note: str
    at: AwareDatetime


class TaskOut(BaseModel):
    id: uuid.UUID
    device_id: str
    device_kind: Literal["cabinet", "bank"]
    cause: MaintenanceCause
    detail: str
    cabinet_id: str | None
    status: MaintenanceTaskStatus
    assignee: str | None
    note: str | None
    opened_at: AwareDatetime
    updated_at: AwareDatetime
    closed_at: AwareDatetime | None
    history: list[TaskStep] | None = None


class TaskList(BaseModel):
    items: list[TaskOut]


class AssignRequest(BaseModel):
    assignee: str = Field(min_length=1, max_length=100, description="The field staff member's subject")
    note: str = Field(default="", max_length=1000)


class StartRequest(BaseModel):
    note: str = Field(default="", max_length=1000)


class CloseRequest(BaseModel):
    note: str = Field(min_length=1, max_length=1000, description="What was done, or why the task is cancelled")


class SyncResult(BaseModel):
    opened: int
