"""Bank attributes (model, time in service, charge cycles, battery health, the cycle limit) per division, and
user attributes (tenure, credit level, deposit-free, age band); permission `analytics:read`, CSV with `format=csv`."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from analytics_svc.attributes import repository as repo
from analytics_svc.attributes.schemas import AttributeRow, AttributesOut
from analytics_svc.settings import Settings
from contracts.regions import DIVISION_CODE_PATTERN, DivisionLevel, name_of
from kit.app import RuntimeDep
from kit.auth import Principal, require_permission
from kit.csv_export import csv_response
from kit.db import ReadSessionDep

AnalyticsReader = Annotated[Principal, Depends(require_permission("analytics:read"))]
Region = Annotated[
    str | None, Query(pattern=DIVISION_CODE_PATTERN, description="Only this division (six-digit code) and inside it")
]
Format = Annotated[Literal["json", "csv"], Query(description="csv: the rows as a CSV file")]

router = APIRouter(prefix="/v1/analytics", tags=["attributes"])


def _rows(found: list[tuple[str, str, str, int]], buckets: dict[str, list[str]]) -> list[AttributeRow]:
    """Every fixed bucket of every division (zeros included), then free-valued attributes (model) by count."""
    counts = {(d, a, b): n for d, a, b, n in found}
    out: list[AttributeRow] = []
    for division in sorted({d for d, _, _, _ in found}):
        name = name_of(division) if division else ""
        free = sorted(
            ((a, b, n) for d, a, b, n in found if d == division and a not in buckets), key=lambda r: (r[0], -r[2], r[1])
        )
        out += [AttributeRow(division_code=division, name=name, attribute=a, bucket=b, count=n) for a, b, n in free]
        for attribute, names in buckets.items():
            out += [
                AttributeRow(
                    division_code=division,
                    name=name,
                    attribute=attribute,
                    bucket=bucket,
                    count=counts.get((division, attribute, bucket), 0),
                )
                for bucket in names
            ]
    return out


@router.get("/bank-attributes", response_model=AttributesOut)
async def bank_attributes(
    _: AnalyticsReader,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    region: Region = None,
    level: DivisionLevel = DivisionLevel.DISTRICT,
    format: Format = "json",
) -> AttributesOut | Response:
    """Banks per model, time in service, charge cycles, battery health and against the cycle limit
    (`approaching` from `BANK_CYCLE_WARNING_RATIO` of `BANK_CYCLE_BUDGET`, 950 of 1,000)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    now = datetime.now(UTC)
    warning = int(settings.bank_cycle_budget * settings.bank_cycle_warning_ratio)
    found = await repo.bank_attributes(session, region, level, now, settings.bank_cycle_budget, warning)
    rows = _rows(found, repo.BANK_BUCKETS)
    if format == "csv":
        return csv_response(rows, list(AttributeRow.model_fields), "bank-attributes")
    return AttributesOut(at=now, rows=rows)


@router.get("/user-attributes", response_model=AttributesOut)
async def user_attributes(
    _: AnalyticsReader, session: ReadSessionDep, region: Region = None, format: Format = "json"
) -> AttributesOut | Response:
    """Users by tenure (since registration), credit level, whether they borrow without a deposit and age band,
    all users or those who rented in `region`. Credit is known from a user's first credit change on (until
    then: `unknown`, the initial score); the age band from the birth year a user gave at registration (the age
    reached this calendar year; `unknown` when none was given or the user deregistered)."""
    now = datetime.now(UTC)
    rows = _rows(await repo.user_attributes(session, region, now), repo.USER_BUCKETS)
    if format == "csv":
        return csv_response(rows, list(AttributeRow.model_fields), "user-attributes")
    return AttributesOut(at=now, rows=rows)
