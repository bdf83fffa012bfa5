"""Every event and command that crosses Kafka, as one discriminated union on `type`.

Events are named `<domain>.<entity>.<past_verb>`; commands are imperative (`device.eject_bank`).
Money is integer fen. Times are timezone-aware UTC. Each domain (the service that publishes it) has its
own module with its `Events` union and `TOPICS` map; this module joins them, so `contracts.events` stays
the one import. A new event goes in its domain module, in that module's `Events` and `TOPICS`.
"""

from typing import Annotated

from pydantic import Field

from contracts.events import analytics, asset, audit, billing, device, notify, user
from contracts.events._base import Fen
from contracts.events.analytics import (
    HotspotCleared,
    HotspotKind,
    HotspotRaised,
    RebalanceMove,
)
from contracts.events.asset import (
    ChargeFailed,
    ChargeSettled,
    CouponChanged,
    CouponStatus,
    CreditChanged,
    DepositPaid,
    DepositRefunded,
    DepositRefundRequested,
    RefundSettled,
    VasFeeFailed,
    VasFeeRefunded,
    VasFeeSettled,
    WalletToppedUp,
)
from contracts.events.audit import (
    StaffActionRecorded,
)
from contracts.events.billing import (
    ChargeRequested,
    DebtWaived,
    DisputeOpened,
    DisputeResolved,
    PriceSnapshot,
    RefundRequested,
    RentalEnded,
    RentalFailed,
    RentalStarted,
)
from contracts.events.device import (
    AdPlayCount,
    AdPlaysReported,
    BankEjected,
    BankFaultCleared,
    BankReturned,
    CabinetStatusChanged,
    DeviceAlarmKind,
    DeviceAlarmRaised,
    DeviceMessageRejected,
    DevicePresenceChanged,
    DeviceTelemetryReported,
    EjectBank,
    EjectFailed,
    EjectFailureReason,
    FirmwareRolloutChanged,
    FirmwareRolloutState,
    FirmwareUpdateChanged,
    FirmwareUpdateState,
    MaintenanceCause,
    MaintenanceTaskOpened,
    MaintenanceTaskStatus,
    MaintenanceTaskStatusChanged,
    PresenceReason,
)
from contracts.events.notify import (
    AdPlaylistItem,
    AdPlaylistPublished,
    BankFaultReported,
    NoticeKind,
    NoticePublished,
    ReportKind,
    TicketOpened,
    TicketOverdue,
    TicketPriority,
    TicketStatus,
    TicketStatusChanged,
    VasConsentRecorded,
)
from contracts.events.user import (
    SendSms,
    SessionRevoked,
    UserBlocked,
    UserDeregistered,
    UserRegistered,
    UserUnblocked,
)
from contracts.topics import Topic

EventData = Annotated[
    user.Events | device.Events | billing.Events | asset.Events | notify.Events | analytics.Events | audit.Events,
    Field(discriminator="type"),
]

TOPIC_BY_TYPE: dict[str, Topic] = {
    **user.TOPICS,
    **device.TOPICS,
    **billing.TOPICS,
    **asset.TOPICS,
    **notify.TOPICS,
    **analytics.TOPICS,
    **audit.TOPICS,
}

__all__ = [
    "TOPIC_BY_TYPE",
    "AdPlayCount",
    "AdPlaylistItem",
    "AdPlaylistPublished",
    "AdPlaysReported",
    "BankEjected",
    "BankFaultCleared",
    "BankFaultReported",
    "BankReturned",
    "CabinetStatusChanged",
    "ChargeFailed",
    "ChargeRequested",
    "ChargeSettled",
    "CouponChanged",
    "CouponStatus",
    "CreditChanged",
    "DebtWaived",
    "DepositPaid",
    "DepositRefundRequested",
    "DepositRefunded",
    "DeviceAlarmKind",
    "DeviceAlarmRaised",
    "DeviceMessageRejected",
    "DevicePresenceChanged",
    "DeviceTelemetryReported",
    "DisputeOpened",
    "DisputeResolved",
    "EjectBank",
    "EjectFailed",
    "EjectFailureReason",
    "EventData",
    "Fen",
    "FirmwareRolloutChanged",
    "FirmwareRolloutState",
    "FirmwareUpdateChanged",
    "FirmwareUpdateState",
    "HotspotCleared",
    "HotspotKind",
    "HotspotRaised",
    "MaintenanceCause",
    "MaintenanceTaskOpened",
    "MaintenanceTaskStatus",
    "MaintenanceTaskStatusChanged",
    "NoticeKind",
    "NoticePublished",
    "PresenceReason",
    "PriceSnapshot",
    "RebalanceMove",
    "RefundRequested",
    "RefundSettled",
    "RentalEnded",
    "RentalFailed",
    "RentalStarted",
    "ReportKind",
    "SendSms",
    "SessionRevoked",
    "StaffActionRecorded",
    "TicketOpened",
    "TicketOverdue",
    "TicketPriority",
    "TicketStatus",
    "TicketStatusChanged",
    "UserBlocked",
    "UserDeregistered",
    "UserRegistered",
    "UserUnblocked",
    "VasConsentRecorded",
    "VasFeeFailed",
    "VasFeeRefunded",
    "VasFeeSettled",
    "WalletToppedUp",
]
