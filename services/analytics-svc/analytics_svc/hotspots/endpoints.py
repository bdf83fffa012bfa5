"""Hotspots for operations (permission `analytics:read`): open alerts with rebalancing suggestions, and
demand against supply per cell right now. Both answer `format=csv` too."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from analytics_svc.hotspots import repository as repo
from analytics_svc.hotspots.rules import HotspotRules, conditions
from analytics_svc.hotspots.schemas import AlertCsvRow, AlertList, AlertOut, CellRow, CellsOut
from analytics_svc.hotspots.service import current_cells
from contracts.events import HotspotKind
from contracts.regions import DIVISION_CODE_PATTERN
from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.csv_export import csv_response
from kit.db import ReadSessionDep

AnalyticsReader = Annotated[Principal, Depends(require_permission("analytics:read"))]
Region = Annotated[
    str | None, Query(pattern=DIVISION_CODE_PATTERN, description="Only this division (six-digit code) and inside it")
]
Format = Annotated[Literal["json", "csv"], Query(description="csv: the rows as a CSV file")]

router = APIRouter(prefix="/v1/analytics", tags=["hotspots"])


@router.get("/hotspots", response_model=AlertList)
async def hotspots(
    _: AnalyticsReader,
    session: ReadSessionDep,
    region: Region = None,
    state: Literal["open", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    format: Format = "json",
) -> AlertList | Response:
    """Cells that ran dry (busy, no banks to lend) or full (no free return slot), newest first, with the
    figures and suggested moves of the latest evaluation."""
    rows = await repo.alerts(session, open_only=state == "open", region=region, limit=limit)
    items = [AlertOut.model_validate(a, from_attributes=True) for a in rows]
    if format == "csv":
        return csv_response([AlertCsvRow.of(a) for a in items], list(AlertCsvRow.model_fields), "hotspots")
    return AlertList(items=items)


@router.get("/supply-demand", response_model=CellsOut)
async def supply_demand(
    _: AnalyticsReader, session: ReadSessionDep, runtime: RuntimeDep, region: Region = None, format: Format = "json"
) -> CellsOut | Response:
    """Per cell: borrows and scans refused for lack of a bank over the window, against rentable banks and
    free return slots in its cabinets' newest stock reports."""
    rules: HotspotRules = runtime.extras["hotspot_rules"]
    now = datetime.now(UTC)
    states = await current_cells(session, rules, now, region)
    rows = []
    for state in sorted(states.values(), key=lambda s: (-s.demand, s.cell)):
        if region is not None and not state.cabinets:
            continue  # demand of a cell whose cabinets are outside the region
        kinds = conditions(state, rules)
        rows.append(
            CellRow(
                cell=state.cell,
                division=state.division,
                cabinets=len(state.cabinets),
                slots=state.slots,
                borrows=state.borrows,
                refused=state.refused,
                demand=state.demand,
                banks_available=state.banks_available,
                free_slots=state.free_slots,
                dry=HotspotKind.DRY in kinds,
                full=HotspotKind.FULL in kinds,
            )
        )
    if format == "csv":
        return csv_response(rows, list(CellRow.model_fields), "supply-demand")
    return CellsOut(window_s=rules.window_s, at=now, items=rows)
