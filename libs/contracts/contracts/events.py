"""Every event and command that crosses Kafka, as one discriminated union on `type`.

Events are named `<domain>.<entity>.<past_verb>`; commands are imperative (`device.eject_bank`).
Money is integer fen. Times are timezone-aware UTC.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.regions import RegionRef
from contracts.topics import Topic

Fen = Annotated[int, Field(description="Amount in fen (1/100 CNY)")]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EjectFailureReason(StrEnum):
    """Why a borrow did not eject a bank; billing turns each into a user-facing error code."""

    BANK_BATTERY_LOW = "bank_battery_low"
    BANK_FAULTY = "bank_faulty"
    BANK_NOT_AVAILABLE = "bank_not_available"
    UNKNOWN_CODE = "unknown_code"
    CABINET_OFFLINE = "cabinet_offline"
    NO_RENTABLE_BANK = "no_rentable_bank"
    DEVICE_NO_ANSWER = "device_no_answer"
    EJECT_FAILED = "eject_failed"
    MOTOR_FAULT = "motor_fault"
    BANK_NOT_PRESENT = "bank_not_present"
    COMMAND_EXPIRED = "command_expired"


# ---- user-svc -------------------------------------------------------------------------


class UserRegistered(_Data):
    type: Literal["user.user.registered"] = "user.user.registered"
    user_id: UUID
    registered_at: AwareDatetime
    terms_version: str


class UserBlocked(_Data):
    """An administrator blocked the user: they cannot borrow until unblocked."""

    type: Literal["user.user.blocked"] = "user.user.blocked"
    user_id: UUID
    reason: str
    at: AwareDatetime


class UserUnblocked(_Data):
    type: Literal["user.user.unblocked"] = "user.user.unblocked"
    user_id: UUID
    at: AwareDatetime


class UserDeregistered(_Data):
    """The user closed the account: refund the deposit and forget personal data after retention."""

    type: Literal["user.user.deregistered"] = "user.user.deregistered"
    user_id: UUID
    at: AwareDatetime


class SessionRevoked(_Data):
    """Access tokens revoked before they expire (logout, refresh-token reuse, password change, block,
    deregistration, an application's access withdrawn). Every replica of every service reads
    `user.sessions.v1` without a consumer group and refuses these token ids (`jti`) until `expires_at`,
    when they would have expired anyway."""

    type: Literal["user.session.revoked"] = "user.session.revoked"
    user_id: UUID
    token_ids: list[str] = Field(min_length=1, max_length=10_000)
    expires_at: AwareDatetime
    reason: str = Field(default="", max_length=64)
    at: AwareDatetime


class SendSms(_Data):
    """Command to user-svc: text the user (who alone holds their phone number) through its SMS provider.
    notify-svc sends it for a critical message that no phone received by push."""

    type: Literal["user.send_sms"] = "user.send_sms"
    user_id: UUID
    text: str = Field(min_length=1, max_length=500)
    reason: str = Field(default="", max_length=40)


# ---- device-svc -----------------------------------------------------------------------


class EjectBank(_Data):
    """Command to device-svc: eject a bank for a rental. `code` is what the user scanned: a bank's
    id (that bank) or a cabinet's id (device-svc picks the cabinet's best rentable bank)."""

    type: Literal["device.eject_bank"] = "device.eject_bank"
    command_id: UUID
    rental_id: UUID
    user_id: UUID
    code: str = Field(min_length=1, max_length=128)
    deadline: AwareDatetime = Field(description="After this instant the eject must not happen")


class BankEjected(_Data):
    type: Literal["device.bank.ejected"] = "device.bank.ejected"
    command_id: UUID
    rental_id: UUID
    bank_id: str
    cabinet_id: str
    slot: int
    battery_pct: int
    ejected_at: AwareDatetime
    bank_model: str | None = Field(default=None, max_length=50, description="The bank's model (rental history)")
    bank_in_service_at: AwareDatetime | None = Field(default=None, description="When the bank went into service")
    bank_charge_cycles: int | None = Field(default=None, ge=0, description="Its battery's cycles, when known")
    bank_health_pct: int | None = Field(default=None, ge=0, le=100, description="Its battery's health, when known")
    region: RegionRef | None = Field(
        default=None, description="The cabinet's division and H3 cell (absent from older producers)"
    )


class EjectFailed(_Data):
    type: Literal["device.eject.failed"] = "device.eject.failed"
    command_id: UUID
    rental_id: UUID
    bank_id: str | None
    cabinet_id: str | None
    reason: EjectFailureReason
    detail: str = ""


class BankReturned(_Data):
    """A cabinet reported a bank back in a slot. `returned_at` is the device's time, already
    checked against the server clock; `device_reported_at` is what the device said."""

    type: Literal["device.bank.returned"] = "device.bank.returned"
    report_id: str
    bank_id: str
    cabinet_id: str
    slot: int
    battery_pct: int | None
    returned_at: AwareDatetime
    device_reported_at: AwareDatetime
    received_at: AwareDatetime
    clock_adjusted: bool = False
    region: RegionRef | None = Field(
        default=None, description="The cabinet's division and H3 cell (absent from older producers)"
    )


class CabinetStatusChanged(_Data):
    type: Literal["device.cabinet.status_changed"] = "device.cabinet.status_changed"
    cabinet_id: str
    online: bool
    at: AwareDatetime
    reason: str = ""


class PresenceReason(StrEnum):
    """Why a device's online state changed."""

    CONNECT = "connect"  # it announced itself (retained status online, or hello)
    MESSAGE = "message"  # another message from a device shown offline
    LAST_WILL = "last_will"  # the broker published its last will (or it said offline itself)
    HEARTBEAT_SILENCE = "heartbeat_silence"  # nothing heard for the offline timeout
    CREDENTIAL_REVOKED = "credential_revoked"  # its credential was revoked: the broker dropped it


class DevicePresenceChanged(_Data):
    """A cabinet or a bank module went online or offline: once per transition, keyed by device id."""

    type: Literal["device.presence.changed"] = "device.presence.changed"
    device_id: str
    device_kind: Literal["cabinet", "bank"]
    online: bool
    reason: PresenceReason
    at: AwareDatetime
    last_seen_at: AwareDatetime | None = None
    rssi_dbm: int | None = None


class DeviceTelemetryReported(_Data):
    """Normalised device report for the data team (heartbeats and inventories)."""

    type: Literal["device.telemetry.reported"] = "device.telemetry.reported"
    device_id: str
    reported_at: AwareDatetime
    received_at: AwareDatetime
    rssi_dbm: int | None = None
    banks_present: int | None = None
    banks_rentable: int | None = None
    slot_count: int | None = Field(default=None, description="A cabinet's slots (free return slots = this - present)")
    # Banks with their own module (bank_report); absent for cabinets.
    device_kind: Literal["cabinet", "bank"] | None = None
    battery_pct: int | None = None
    charging: bool | None = None
    lat: float | None = None
    lon: float | None = None
    temperature_c: float | None = None
    charge_cycles: int | None = None
    health_pct: int | None = None
    charge_mah_total: int | None = None
    discharge_mah_total: int | None = None
    moving: bool | None = None
    region: RegionRef | None = Field(
        default=None,
        description="A cabinet's region, or a bank's from its position (absent from older producers)",
    )


class DeviceAlarmKind(StrEnum):
    MOVED_WHILE_IDLE = "moved_while_idle"  # 6.2.5: accelerometer, bank not rented
    HIGH_TEMPERATURE = "high_temperature"
    POSITION_OVERDUE = "position_overdue"  # 7.2: an idle bank silent on position for 4 hours
    MAINTENANCE_DUE = "maintenance_due"  # 7.4.1: near its cycle budget or low battery health


class DeviceAlarmRaised(_Data):
    """Something operations must look at (also listed by device-svc's operations API)."""

    type: Literal["device.alarm.raised"] = "device.alarm.raised"
    device_id: str
    kind: DeviceAlarmKind
    at: AwareDatetime
    detail: str = ""


class DeviceMessageRejected(_Data):
    type: Literal["device.message.rejected"] = "device.message.rejected"
    device_id: str | None
    mqtt_topic: str
    reason: str
    at: AwareDatetime


# ---- billing-svc ----------------------------------------------------------------------


class PriceSnapshot(_Data):
    """The price that applies to a rental, fixed when it started."""

    period_minutes: int
    price_per_period_fen: Fen
    free_minutes: int
    daily_cap_fen: Fen
    purchase_ceiling_fen: Fen | None = Field(
        default=None, description="An unreturned bank costing this much is sold to the user (no more is charged)"
    )


class RentalStarted(_Data):
    type: Literal["billing.rental.started"] = "billing.rental.started"
    rental_id: UUID
    user_id: UUID
    bank_id: str
    cabinet_id: str
    slot: int
    started_at: AwareDatetime
    price: PriceSnapshot
    after_failure: bool = Field(
        default=False, description="A late eject revived a rental the user was told had failed: tell the user"
    )


class RentalFailed(_Data):
    type: Literal["billing.rental.failed"] = "billing.rental.failed"
    rental_id: UUID
    user_id: UUID
    reason: EjectFailureReason
    at: AwareDatetime


class RentalEnded(_Data):
    type: Literal["billing.rental.ended"] = "billing.rental.ended"
    rental_id: UUID
    user_id: UUID
    bank_id: str
    start_cabinet_id: str
    return_cabinet_id: str
    started_at: AwareDatetime
    ended_at: AwareDatetime
    duration_seconds: int
    fee_fen: Fen
    purchased: bool = Field(default=False, description="Not returned by the purchase ceiling: sold to the user")


class ChargeRequested(_Data):
    """Ask asset-credit-svc to collect a fee. `charge_id` is the idempotency key: one charge per rental."""

    type: Literal["billing.charge.requested"] = "billing.charge.requested"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    # The rental's timing, so asset-credit-svc can apply a card of free minutes (absent from
    # older producers: then no card applies).
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    duration_seconds: int | None = Field(default=None, ge=0)


class DebtWaived(_Data):
    """Support lowered an unpaid rental's fee to zero: the user no longer owes it."""

    type: Literal["billing.debt.waived"] = "billing.debt.waived"
    rental_id: UUID
    user_id: UUID
    waived_fen: Fen
    at: AwareDatetime


class RefundRequested(_Data):
    """Give money back for a rental (a support correction). `refund_id` is the idempotency key."""

    type: Literal["billing.refund.requested"] = "billing.refund.requested"
    refund_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    reason: str = Field(max_length=200)


class DisputeOpened(_Data):
    """A user disputed a rental (billing-svc holds the dispute and alone resolves it); notify-svc opens
    a ticket of kind `dispute` in the staff queue."""

    type: Literal["billing.dispute.opened"] = "billing.dispute.opened"
    dispute_id: UUID
    rental_id: UUID
    user_id: UUID
    reason: str = Field(max_length=2000)
    at: AwareDatetime


class DisputeResolved(_Data):
    """Support settled a dispute in billing-svc: `rejected`, or `corrected` (the rental ended or its fee
    lowered)."""

    type: Literal["billing.dispute.resolved"] = "billing.dispute.resolved"
    dispute_id: UUID
    rental_id: UUID
    user_id: UUID
    outcome: Literal["rejected", "corrected"]
    note: str = Field(default="", max_length=2000)
    by: str = Field(max_length=100)
    at: AwareDatetime


# ---- asset-credit-svc -----------------------------------------------------------------


class WalletToppedUp(_Data):
    type: Literal["asset.wallet.topped_up"] = "asset.wallet.topped_up"
    user_id: UUID
    top_up_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    provider: str


class ChargeSettled(_Data):
    type: Literal["asset.charge.settled"] = "asset.charge.settled"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    settled_at: AwareDatetime
    # How the fee (`amount_fen`) was covered, in the order applied: a card's free minutes, a
    # coupon, red packets, then the balance (topped up by the user's provider when short).
    card_fen: Fen = 0
    coupon_fen: Fen = 0
    red_packet_fen: Fen = 0
    paid_fen: Fen | None = Field(default=None, description="Paid from the balance/provider; null means amount_fen")


class ChargeFailed(_Data):
    type: Literal["asset.charge.failed"] = "asset.charge.failed"
    charge_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    reason: str


class RefundSettled(_Data):
    type: Literal["asset.refund.settled"] = "asset.refund.settled"
    refund_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    balance_fen: Fen
    settled_at: AwareDatetime


class CouponStatus(StrEnum):
    AVAILABLE = "available"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CouponChanged(_Data):
    """A coupon was issued to a user (`available`) or left that state. An available coupon past
    `expires_at` is unused no longer, with or without an `expired` event."""

    type: Literal["asset.coupon.changed"] = "asset.coupon.changed"
    user_id: UUID
    asset_id: UUID
    status: CouponStatus
    expires_at: AwareDatetime
    at: AwareDatetime


# ---- notify-svc (customer service) ----------------------------------------------------


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


class BankFaultCleared(_Data):
    """Staff inspected a bank users reported broken and cleared the reports: it is rentable again
    unless something else (its state, its slot) still keeps it."""

    type: Literal["device.bank.fault_cleared"] = "device.bank.fault_cleared"
    bank_id: str
    ticket_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    by: str = Field(max_length=100)
    note: str = Field(default="", max_length=500)
    at: AwareDatetime


class MaintenanceCause(StrEnum):
    """Why a maintenance task was opened; one open task per device and cause."""

    MOVED_WHILE_IDLE = "moved_while_idle"
    HIGH_TEMPERATURE = "high_temperature"
    POSITION_OVERDUE = "position_overdue"
    MAINTENANCE_DUE = "maintenance_due"  # 7.4.1: the cycle budget (1,000) approached or battery health low
    FAULT_REPORT = "fault_report"  # users reported the bank broken
    BANK_FAULTY = "bank_faulty"  # the bank is in state faulty
    SLOT_FAULT = "slot_fault"  # a cabinet reported a slot abnormal
    CABINET_OFFLINE = "cabinet_offline"  # silent for longer than the maintenance threshold


class MaintenanceTaskStatus(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class MaintenanceTaskOpened(_Data):
    """device-svc opened a task for field staff (from an alarm, a fault report or the cycle/health rule)."""

    type: Literal["device.maintenance_task.opened"] = "device.maintenance_task.opened"
    task_id: UUID
    device_id: str = Field(max_length=64)
    device_kind: Literal["cabinet", "bank"]
    cause: MaintenanceCause
    detail: str = Field(default="", max_length=200)
    cabinet_id: str | None = Field(default=None, max_length=64)
    at: AwareDatetime


class MaintenanceTaskStatusChanged(_Data):
    """A maintenance task moved through its lifecycle (one event per transition, in order per task)."""

    type: Literal["device.maintenance_task.status_changed"] = "device.maintenance_task.status_changed"
    task_id: UUID
    device_id: str = Field(max_length=64)
    cause: MaintenanceCause
    from_status: MaintenanceTaskStatus
    to_status: MaintenanceTaskStatus
    action: str = Field(max_length=40)
    by: str = Field(max_length=100)
    assignee: str | None = Field(default=None, max_length=100)
    note: str = Field(default="", max_length=1000)
    at: AwareDatetime


class DepositPaid(_Data):
    """A user's deposit was paid (the provider's verified notification credited it)."""

    type: Literal["asset.deposit.paid"] = "asset.deposit.paid"
    deposit_id: UUID
    user_id: UUID
    amount_fen: Fen
    channel: str = Field(max_length=20)
    at: AwareDatetime


class DepositRefundRequested(_Data):
    """A deposit refund was booked (asked by the user, or on deregistration); the provider pays it."""

    type: Literal["asset.deposit.refund_requested"] = "asset.deposit.refund_requested"
    refund_id: UUID
    user_id: UUID
    amount_fen: Fen
    source: str = Field(max_length=20, description="`user` or `deregistered`")
    requested_at: AwareDatetime


class DepositRefunded(_Data):
    """The provider confirmed a deposit refund: the money is back with the user."""

    type: Literal["asset.deposit.refunded"] = "asset.deposit.refunded"
    refund_id: UUID
    user_id: UUID
    amount_fen: Fen
    requested_at: AwareDatetime
    paid_at: AwareDatetime


class CreditChanged(_Data):
    """A user's credit score moved (a rule or an administrator): the score and level after it, and whether
    borrowing needs no deposit at this score. Consumers keep the latest by `at` (analytics' user
    attributes, notify-svc's campaign audience)."""

    type: Literal["asset.credit.changed"] = "asset.credit.changed"
    user_id: UUID
    score: int = Field(ge=0, le=1000)
    delta: int
    level: str = Field(max_length=32)
    deposit_free: bool
    reason: str = Field(max_length=40)
    at: AwareDatetime


# ---- analytics-svc --------------------------------------------------------------------


class HotspotKind(StrEnum):
    DRY = "dry"  # a busy cell's cabinets ran out of rentable banks
    FULL = "full"  # a cell's cabinets have (almost) no free return slot


class RebalanceMove(_Data):
    """Move `banks` banks from one cabinet to another (a suggestion for operations)."""

    from_cabinet_id: str = Field(max_length=64)
    to_cabinet_id: str = Field(max_length=64)
    banks: int = Field(ge=1)


class HotspotRaised(_Data):
    """A cell (H3, resolution 8) ran dry or full; raised once until it is cleared. Demand is counted over
    the evaluation window: borrows started there and scans refused for lack of a rentable bank."""

    type: Literal["analytics.hotspot.raised"] = "analytics.hotspot.raised"
    alert_id: UUID
    cell: str = Field(max_length=16)
    division: str | None = Field(default=None, max_length=6)
    kind: HotspotKind
    borrows: int = Field(ge=0)
    refused: int = Field(ge=0)
    banks_available: int = Field(ge=0)
    free_slots: int = Field(ge=0)
    moves: list[RebalanceMove] = Field(default_factory=list, max_length=100)
    at: AwareDatetime


class HotspotCleared(_Data):
    """The condition of a raised hotspot no longer holds (once per alert)."""

    type: Literal["analytics.hotspot.cleared"] = "analytics.hotspot.cleared"
    alert_id: UUID
    cell: str = Field(max_length=16)
    kind: HotspotKind
    raised_at: AwareDatetime
    at: AwareDatetime


class StaffActionRecorded(_Data):
    """A staff member (administrator, operator, ...) did something in a service: one audit trail for the
    whole platform, kept append-only and hash-chained by user-svc (`kit.audit`, issue 15). `before` and
    `after` hold the fields the action changed; `client_address` is where the request came from."""

    type: Literal["audit.staff_action.recorded"] = "audit.staff_action.recorded"
    actor_id: str = Field(max_length=64)
    actor_kind: str = Field(max_length=16)  # admin | client
    actor_roles: list[str] = Field(max_length=20)
    action: str = Field(max_length=80)
    target_type: str = Field(max_length=40)
    target_id: str = Field(max_length=128)
    reason: str | None = Field(default=None, max_length=2000)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    client_address: str | None = Field(default=None, max_length=64)
    at: AwareDatetime


EventData = Annotated[
    UserRegistered
    | UserBlocked
    | UserUnblocked
    | UserDeregistered
    | SessionRevoked
    | SendSms
    | EjectBank
    | BankEjected
    | EjectFailed
    | BankReturned
    | CabinetStatusChanged
    | DevicePresenceChanged
    | DeviceTelemetryReported
    | DeviceAlarmRaised
    | DeviceMessageRejected
    | RentalStarted
    | RentalFailed
    | RentalEnded
    | ChargeRequested
    | WalletToppedUp
    | ChargeSettled
    | ChargeFailed
    | RefundRequested
    | RefundSettled
    | DebtWaived
    | DisputeOpened
    | DisputeResolved
    | CreditChanged
    | CouponChanged
    | BankFaultReported
    | BankFaultCleared
    | TicketOpened
    | TicketStatusChanged
    | TicketOverdue
    | NoticePublished
    | MaintenanceTaskOpened
    | MaintenanceTaskStatusChanged
    | HotspotRaised
    | HotspotCleared
    | DepositPaid
    | DepositRefundRequested
    | DepositRefunded
    | StaffActionRecorded,
    Field(discriminator="type"),
]

TOPIC_BY_TYPE: dict[str, Topic] = {
    "user.user.registered": Topic.USERS,
    "user.user.blocked": Topic.USERS,
    "user.user.unblocked": Topic.USERS,
    "user.user.deregistered": Topic.USERS,
    "user.session.revoked": Topic.SESSIONS,
    "user.send_sms": Topic.USER_COMMANDS,  # key: user_id
    "device.eject_bank": Topic.DEVICE_COMMANDS,  # key: the scanned code
    "device.bank.ejected": Topic.DEVICE_EJECTS,
    "device.eject.failed": Topic.DEVICE_EJECTS,
    "device.bank.returned": Topic.DEVICE_RETURNS,
    "device.cabinet.status_changed": Topic.DEVICE_STATUS,
    "device.presence.changed": Topic.DEVICE_STATUS,
    "device.telemetry.reported": Topic.DEVICE_TELEMETRY,
    "device.alarm.raised": Topic.DEVICE_STATUS,
    "device.message.rejected": Topic.DEVICE_REJECTIONS,
    "billing.rental.started": Topic.RENTALS,
    "billing.rental.failed": Topic.RENTALS,
    "billing.rental.ended": Topic.RENTALS,
    "billing.charge.requested": Topic.CHARGES,
    "asset.wallet.topped_up": Topic.WALLETS,
    "asset.charge.settled": Topic.PAYMENTS,
    "asset.charge.failed": Topic.PAYMENTS,
    "billing.refund.requested": Topic.CHARGES,
    "asset.refund.settled": Topic.PAYMENTS,
    "billing.debt.waived": Topic.CHARGES,
    "billing.dispute.opened": Topic.DISPUTES,
    "billing.dispute.resolved": Topic.DISPUTES,
    "asset.credit.changed": Topic.CREDIT,
    "asset.coupon.changed": Topic.COUPONS,
    "notify.bank.fault_reported": Topic.FAULT_REPORTS,  # key: bank_id
    "device.bank.fault_cleared": Topic.DEVICE_FAULTS,  # key: bank_id
    "notify.ticket.opened": Topic.TICKETS,
    "notify.ticket.status_changed": Topic.TICKETS,
    "notify.ticket.overdue": Topic.TICKETS,
    "notify.notice.published": Topic.NOTICES,
    "device.maintenance_task.opened": Topic.MAINTENANCE,
    "device.maintenance_task.status_changed": Topic.MAINTENANCE,
    "analytics.hotspot.raised": Topic.HOTSPOTS,
    "analytics.hotspot.cleared": Topic.HOTSPOTS,
    "asset.deposit.paid": Topic.DEPOSITS,
    "asset.deposit.refund_requested": Topic.DEPOSITS,
    "asset.deposit.refunded": Topic.DEPOSITS,
    "audit.staff_action.recorded": Topic.STAFF_AUDIT,  # key: the acting staff member's id
}
