"""The one interface every analysis reads through. `repository.PostgresStore` implements it on the
service's PostgreSQL (facts + hourly rollup); an embedded columnar engine or a distributed one
(ClickHouse) would implement the same methods over the same fact shapes (docs/analytics.md).

Periods are half-open UTC instants [start, end); `region` is a division code filter (prefix match,
see `contracts.regions.code_prefix`); `level` groups division codes to province, city or district."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, Protocol

from contracts.regions import DivisionLevel

Granularity = Literal["day", "week", "month"]


@dataclass(frozen=True)
class BankCounts:
    division: str  # '' when unknown
    in_cabinets: int
    rented: int
    faulty: int
    lost: int


@dataclass(frozen=True)
class ActiveUsers:
    period_start: date
    active: int
    new: int


@dataclass(frozen=True)
class HourCount:
    hour: datetime  # UTC hour start
    rentals: int


@dataclass(frozen=True)
class Count:
    key: str
    rentals: int


@dataclass(frozen=True)
class Flow:
    origin: str
    destination: str
    rentals: int


class AnalysisStore(Protocol):
    async def bank_counts(
        self, region: str | None, level: DivisionLevel, now: datetime, lost_after: timedelta
    ) -> list[BankCounts]: ...

    async def active_users(
        self, region: str | None, first: date, last: date, granularity: Granularity, zone: str
    ) -> list[ActiveUsers]: ...

    async def rentals_per_hour(self, region: str | None, start: datetime, end: datetime) -> list[HourCount]: ...

    async def rentals_per_division(
        self, region: str | None, level: DivisionLevel, start: datetime, end: datetime
    ) -> list[Count]: ...

    async def rentals_per_cell(self, region: str | None, start: datetime, end: datetime) -> list[Count]: ...

    async def flows(self, region: str | None, level: DivisionLevel, start: datetime, end: datetime) -> list[Flow]: ...
