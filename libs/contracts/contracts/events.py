"""Every event and command that crosses Kafka, as one discriminated union on `type`.

Events are named `<domain>.<entity>.<past_verb>`; commands are imperative (`device.eject_bank`).
Money is integer fen. Times are timezone-aware UTC.
"""

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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


class CabinetStatusChanged(_Data):
    type: Literal["device.cabinet.status_changed"] = "device.cabinet.status_changed"
    cabinet_id: str
    online: bool
    at: AwareDatetime
    reason: str = ""


class DeviceTelemetryReported(_Data):
    """Normalised device report for the data team (heartbeats and inventories)."""

    type: Literal["device.telemetry.reported"] = "device.telemetry.reported"
    device_id: str
    reported_at: AwareDatetime
    received_at: AwareDatetime
    rssi_dbm: int | None = None
    banks_present: int | None = None
    banks_rentable: int | None = None
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


class RefundRequested(_Data):
    """Give money back for a rental (a support correction). `refund_id` is the idempotency key."""

    type: Literal["billing.refund.requested"] = "billing.refund.requested"
    refund_id: UUID
    rental_id: UUID
    user_id: UUID
    amount_fen: Fen
    reason: str = Field(max_length=200)


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


EventData = Annotated[
    UserRegistered
    | UserBlocked
    | UserUnblocked
    | UserDeregistered
    | EjectBank
    | BankEjected
    | EjectFailed
    | BankReturned
    | CabinetStatusChanged
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
    | RefundSettled,
    Field(discriminator="type"),
]

TOPIC_BY_TYPE: dict[str, Topic] = {
    "user.user.registered": Topic.USERS,
    "user.user.blocked": Topic.USERS,
    "user.user.unblocked": Topic.USERS,
    "user.user.deregistered": Topic.USERS,
    "device.eject_bank": Topic.DEVICE_COMMANDS,  # key: the scanned code
    "device.bank.ejected": Topic.DEVICE_EJECTS,
    "device.eject.failed": Topic.DEVICE_EJECTS,
    "device.bank.returned": Topic.DEVICE_RETURNS,
    "device.cabinet.status_changed": Topic.DEVICE_STATUS,
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
}
