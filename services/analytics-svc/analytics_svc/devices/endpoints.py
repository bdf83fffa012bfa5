"""Device communication status and operating state per region (permission `analytics:read`), from the
presence transitions device-svc publishes and the cabinets' stock reports. CSV with `format=csv`."""

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from analytics_svc.devices import repository as repo
from analytics_svc.devices.schemas import SilentOut, SilentRow, StatusOut, StatusRow
from contracts.regions import DIVISION_CODE_PATTERN, DivisionLevel, name_of
from kit.auth import Principal, require_permission
from kit.csv_export import csv_response
from kit.db import ReadSessionDep

AnalyticsReader = Annotated[Principal, Depends(require_permission("analytics:read"))]
Region = Annotated[
    str | None, Query(pattern=DIVISION_CODE_PATTERN, description="Only this division (six-digit code) and inside it")
]
SilentAfter = Annotated[int, Query(ge=60, le=90 * 86400, description="Offline this long (seconds) counts as silent")]
Format = Annotated[Literal["json", "csv"], Query(description="csv: the rows as a CSV file")]

router = APIRouter(prefix="/v1/analytics", tags=["device status"])


@router.get("/device-status", response_model=StatusOut)
async def device_status(
    _: AnalyticsReader,
    session: ReadSessionDep,
    region: Region = None,
    level: DivisionLevel = DivisionLevel.DISTRICT,
    silent_after_s: SilentAfter = 3600,
    format: Format = "json",
) -> StatusOut | Response:
    """Per division, cabinets and bank modules: online, offline, share online, never heard, silent, when
    offline devices were last seen (under 1 h, 1-24 h, 1-7 d, over 7 d), and cabinets empty or full."""
    now = datetime.now(UTC)
    counts = await repo.status_counts(session, region, level, now, now - timedelta(seconds=silent_after_s))
    rows = [
        StatusRow(
            division_code=c.division,
            name=name_of(c.division) if c.division else "",
            online_share=round(c.online / (c.online + c.offline), 4) if c.online + c.offline else None,
            **{k: v for k, v in asdict(c).items() if k != "division"},
        )
        for c in counts
    ]
    if format == "csv":
        return csv_response(rows, list(StatusRow.model_fields), "device-status")
    return StatusOut(at=now, silent_after_s=silent_after_s, rows=rows)


@router.get("/silent-devices", response_model=SilentOut)
async def silent_devices(
    _: AnalyticsReader,
    session: ReadSessionDep,
    region: Region = None,
    kind: Literal["cabinet", "bank"] | None = None,
    silent_after_s: SilentAfter = 3600,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    format: Format = "json",
) -> SilentOut | Response:
    """Offline devices not heard for `silent_after_s`, and devices never heard, the longest silent first."""
    before = datetime.now(UTC) - timedelta(seconds=silent_after_s)
    found = await repo.silent_devices(session, region, kind, before, limit)
    rows = [
        SilentRow(device_id=d.device_id, kind=d.kind, division_code=d.division, last_seen_at=d.last_seen_at)
        for d in found
    ]
    if format == "csv":
        return csv_response(rows, list(SilentRow.model_fields), "silent-devices")
    return SilentOut(silent_after_s=silent_after_s, rows=rows)
