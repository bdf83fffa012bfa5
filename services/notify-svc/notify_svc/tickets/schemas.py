import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from contracts.events import ReportKind, TicketPriority, TicketStatus
from notify_svc.notices.schemas import ImageOut

DeviceCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,64}$")]
# User and staff text: kept exactly as written (HTML and scripts included) and only ever served as JSON
# text, never rendered as markup.
Body = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportIn(_In):
    kind: ReportKind
    text: Body
    rental_id: uuid.UUID | None = None
    bank_id: DeviceCode | None = Field(default=None, description="The bank's id (printed on it, also its QR code)")
    cabinet_id: DeviceCode | None = None

    @field_validator("kind")
    @classmethod
    def _not_a_dispute(cls, kind: ReportKind) -> ReportKind:
        if kind is ReportKind.DISPUTE:
            raise ValueError("dispute a rental with POST /v1/rentals/{rental_id}/disputes")
        if kind is ReportKind.CALLBACK:
            raise ValueError("ask for a call back with POST /v1/callbacks")
        return kind


class ReplyIn(_In):
    text: Body


class StaffReplyIn(_In):
    text: Body
    wait_for_user: bool = Field(default=False, description="The ticket waits for the user's answer")


class AssignIn(_In):
    assignee: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class PriorityIn(_In):
    priority: TicketPriority


class EntryOut(BaseModel):
    entry_id: uuid.UUID
    author: str = Field(description="`you`, `support` or `system` for users; the staff member for staff")
    internal: bool = False
    body: str
    created_at: datetime


class TicketOut(BaseModel):
    ticket_id: uuid.UUID
    kind: ReportKind
    status: TicketStatus
    priority: TicketPriority
    description: str
    rental_id: uuid.UUID | None
    bank_id: str | None
    cabinet_id: str | None
    created_at: datetime
    updated_at: datetime
    sla_due_at: datetime
    overdue: bool
    resolved_at: datetime | None
    closed_at: datetime | None
    entries: list[EntryOut] | None = Field(default=None, description="The thread, on a single ticket only")
    photos: list[ImageOut] | None = Field(default=None, description="Signed photo URLs, on a single ticket only")


class StaffTicketOut(TicketOut):
    user_id: uuid.UUID
    assignee: str | None
    overdue_alerted_at: datetime | None


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_before: str | None


class StaffTicketPage(BaseModel):
    items: list[StaffTicketOut]
    next_before: str | None
