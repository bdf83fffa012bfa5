"""Events of notify-svc (customer service): fault reports, tickets, notices, consent to value-added
services and the cabinet screens' ad playlist."""

from enum import StrEnum
from typing import Literal, TypeAlias
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events._base import _Data
from contracts.regions import DivisionCode
from contracts.topics import Topic


class ReportKind(StrEnum):
    """What a user reports (6.1.7, 6.3.9); every report is a support ticket."""

    FAULTY_BANK = "faulty_bank"
    DAMAGED_CABLE = "damaged_cable"
    ABUSE = "abuse"
    APP_PROBLEM = "app_problem"
    OTHER = "other"
    # Opened by notify-svc from billing's `billing.dispute.opened`, never through POST /v1/tickets.
    DISPUTE = "dispute"
    # Opened by notify-svc for a call-back request (POST /v1/callbacks).
    CALLBACK = "callback"


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketStatus(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    WAITING_USER = "waiting_user"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


class BankFaultReported(_Data):
    """A user reported a bank broken (faulty bank, damaged cable): device-svc stops lending it until
    staff clear the report (`device.bank.fault_cleared`) and lists a maintenance task for it."""

    type: Literal["notify.bank.fault_reported"] = "notify.bank.fault_reported"
    ticket_id: UUID
    user_id: UUID
    bank_id: str = Field(min_length=1, max_length=64)
    kind: ReportKind
    cabinet_id: str | None = Field(default=None, max_length=64)
    rental_id: UUID | None = None
    at: AwareDatetime


class TicketOpened(_Data):
    type: Literal["notify.ticket.opened"] = "notify.ticket.opened"
    ticket_id: UUID
    user_id: UUID
    kind: ReportKind
    priority: TicketPriority
    sla_due_at: AwareDatetime
    bank_id: str | None = None
    cabinet_id: str | None = None
    rental_id: UUID | None = None
    at: AwareDatetime


class TicketStatusChanged(_Data):
    """A ticket moved through its lifecycle (one event per transition, in order per ticket)."""

    type: Literal["notify.ticket.status_changed"] = "notify.ticket.status_changed"
    ticket_id: UUID
    user_id: UUID
    from_status: TicketStatus
    to_status: TicketStatus
    action: str = Field(max_length=40)
    by: str = Field(max_length=100, description="`user` or the staff member's subject")
    at: AwareDatetime


class TicketOverdue(_Data):
    """A ticket passed its SLA deadline while still open: an alert for support leads (once per ticket)."""

    type: Literal["notify.ticket.overdue"] = "notify.ticket.overdue"
    ticket_id: UUID
    priority: TicketPriority
    status: TicketStatus
    sla_due_at: AwareDatetime
    assignee: str | None = None
    at: AwareDatetime


class NoticeKind(StrEnum):
    SYSTEM = "system"
    OPERATIONS = "operations"


class NoticePublished(_Data):
    """Staff published a notice to every user's inbox (6.1.6, 6.3.8)."""

    type: Literal["notify.notice.published"] = "notify.notice.published"
    notice_id: UUID
    kind: NoticeKind
    title: str = Field(max_length=200)
    image_count: int = Field(ge=0)
    by: str = Field(max_length=100)
    at: AwareDatetime


class VasConsentRecorded(_Data):
    """A user accepted a value-added service's risk notice (the exact version) or withdrew (6.3.7). A priced
    service is charged from this event: `consent_id` is the idempotency key (one charge per acceptance)."""

    type: Literal["notify.vas_consent.recorded"] = "notify.vas_consent.recorded"
    consent_id: int = Field(ge=1)
    user_id: UUID
    service_code: str = Field(max_length=40)
    provider: str = Field(max_length=100)
    action: Literal["accepted", "withdrawn"]
    notice_version: int = Field(ge=1)
    price_fen: int | None = Field(default=None, ge=0, description="fen the service costs; none: free")
    at: AwareDatetime
    reason: str | None = Field(
        default=None, max_length=40, description="the platform recorded it, not the user: `payment_failed`"
    )


class AdPlaylistItem(_Data):
    """One advertisement on the cabinet screens, with its schedule and regions (none: everywhere)."""

    ad_id: UUID
    advertiser: str = Field(max_length=100)
    title: str = Field(max_length=100)
    text: str = Field(max_length=200)
    media_url: str | None = Field(default=None, max_length=300)
    display_s: int = Field(ge=5, le=300)
    regions: list[DivisionCode] = Field(default_factory=list, max_length=50)
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class AdPlaylistPublished(_Data):
    """The whole playlist of a screen slot after a change (every ad not yet ended). Versions rise in commit
    order: a consumer keeps the highest and drops an older one arriving late."""

    type: Literal["notify.ad_playlist.published"] = "notify.ad_playlist.published"
    slot: Literal["cabinet_screen"] = "cabinet_screen"
    version: int = Field(ge=1)
    items: list[AdPlaylistItem] = Field(max_length=200)
    at: AwareDatetime


# Every event of this domain, joined into contracts.events.EventData.
Events: TypeAlias = (
    BankFaultReported
    | TicketOpened
    | TicketStatusChanged
    | TicketOverdue
    | NoticePublished
    | VasConsentRecorded
    | AdPlaylistPublished
)

TOPICS: dict[str, Topic] = {
    "notify.bank.fault_reported": Topic.FAULT_REPORTS,  # key: bank_id
    "notify.ticket.opened": Topic.TICKETS,
    "notify.ticket.status_changed": Topic.TICKETS,
    "notify.ticket.overdue": Topic.TICKETS,
    "notify.notice.published": Topic.NOTICES,
    "notify.vas_consent.recorded": Topic.VAS_CONSENTS,  # key: user_id
    "notify.ad_playlist.published": Topic.ADS,  # key: the slot
}
