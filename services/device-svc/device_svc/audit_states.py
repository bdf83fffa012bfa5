"""What an audited staff route records of its target, read before and after the action in the request's
transaction (`kit.audit.row_state`); the audit trail keeps only the fields that changed. A bank's and a
cabinet's readings (position, battery, signal, presence) are left out: they change on their own, and a
rented bank's position is the renter's personal data."""

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Bank, Cabinet, DeviceCredential, FirmwareRollout, MaintenanceTask
from kit.audit import row_state

_PRESENCE = ("online", "last_seen_at", "rssi_dbm")
BANK = row_state(
    Bank,
    exclude=(
        *_PRESENCE,
        "battery_pct",
        "last_report_at",
        "telemetry_at",
        "lat",
        "lon",
        "position_at",
        "charging",
        "temperature_c",
        "charge_cycles",
        "health_pct",
        "charge_mah_total",
        "discharge_mah_total",
    ),
)
CABINET = row_state(Cabinet, exclude=(*_PRESENCE, "rssi_at", "inventory_at", "firmware", "light_on_until"))
CREDENTIAL = row_state(DeviceCredential)
TASK = row_state(MaintenanceTask)
ROLLOUT = row_state(FirmwareRollout)


async def DEVICE(session: AsyncSession, device_id: str) -> dict[str, Any] | None:
    """A device's credential and its cabinet's or bank's registry state (rotate, revoke, retire)."""
    credential = await CREDENTIAL(session, device_id)
    device = await CABINET(session, device_id) or await BANK(session, device_id)
    if credential is None and device is None:
        return None
    return {"credential": credential, "state": (device or {}).get("state")}
