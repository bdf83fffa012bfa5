"""The events of one online/offline transition, built in one place for every path that detects one
(a message, a last will, silence, a revoked credential): `device.presence.changed` for every device
kind, and, for a cabinet, also the older `device.cabinet.status_changed` its consumers read."""

from datetime import datetime
from typing import Literal

from contracts.events import CabinetStatusChanged, DevicePresenceChanged, EventData, PresenceReason


def transition_events(
    device_id: str,
    kind: Literal["cabinet", "bank"],
    *,
    online: bool,
    reason: PresenceReason,
    at: datetime,
    last_seen_at: datetime | None,
    rssi_dbm: int | None,
    status_reason: str | None = None,
) -> list[EventData]:
    """`status_reason`: the cabinet event's own reason text (defaults to `reason`'s value)."""
    presence = DevicePresenceChanged(
        device_id=device_id,
        device_kind=kind,
        online=online,
        reason=reason,
        at=at,
        last_seen_at=last_seen_at,
        rssi_dbm=rssi_dbm,
    )
    if kind != "cabinet":
        return [presence]
    status = CabinetStatusChanged(cabinet_id=device_id, online=online, at=at, reason=status_reason or reason.value)
    return [status, presence]
