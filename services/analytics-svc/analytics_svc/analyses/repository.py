"""All SQL of the analyses: `AnalysisStore` on PostgreSQL. Summable figures read the hourly rollup;
distinct users read the counters kept at ingest (`active_user_counts`); bank states read `bank_facts` and
cabinet stock. Never commits."""

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.active_users import GRAIN_OF, period_start
from analytics_svc.analyses.store import ActiveUsers, BankCounts, Count, Flow, Granularity, HourCount
from contracts.regions import DivisionLevel, code_prefix


def _level(column: str, level: DivisionLevel) -> str:
    """SQL for `column`'s division at `level` ('' stays '': unknown)."""
    if level is DivisionLevel.PROVINCE:
        return f"CASE WHEN coalesce({column}, '') = '' THEN '' ELSE left({column}, 2) || '0000' END"
    if level is DivisionLevel.CITY:
        return f"CASE WHEN coalesce({column}, '') = '' THEN '' ELSE left({column}, 4) || '00' END"
    return f"coalesce({column}, '')"


def _in_region(column: str, region: str | None, params: dict[str, Any], name: str = "prefix") -> str:
    if region is None:
        return "TRUE"
    params[name] = code_prefix(region) + "%"
    return f"{column} LIKE :{name}"


def _sql(template: str, **fragments: str) -> TextClause:
    # Fragments come only from `_level` and `_in_region`: column names and SQL chosen by an enum;
    # every value is a bound parameter.
    return text(template.format(**fragments))


class PostgresStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _rows(self, sql: TextClause, params: dict[str, Any]) -> list[Any]:
        return list((await self._session.execute(sql, params)).all())

    async def bank_counts(
        self, region: str | None, level: DivisionLevel, now: datetime, lost_after: timedelta
    ) -> list[BankCounts]:
        params: dict[str, Any] = {"lost_before": now - lost_after}
        stock = await self._rows(
            _sql(
                """SELECT {f0} AS d, sum(banks_present) FROM cabinet_regions
                WHERE banks_present IS NOT NULL AND {f1} GROUP BY 1""",
                f0=_level("division", level),
                f1=_in_region("division", region, params),
            ),
            params,
        )
        states = await self._rows(
            _sql(
                """SELECT {f0} AS d,
                  count(*) FILTER (WHERE state = 'rented' AND state_at >= :lost_before),
                  count(*) FILTER (WHERE state = 'faulty'),
                  count(*) FILTER (WHERE state = 'lost' OR (state = 'rented' AND state_at < :lost_before))
                FROM bank_facts WHERE {f1} GROUP BY 1""",
                f0=_level("division", level),
                f1=_in_region("division", region, params),
            ),
            params,
        )
        by: dict[str, list[int]] = {}
        for division, present in stock:
            by.setdefault(division, [0, 0, 0, 0])[0] = int(present or 0)
        for division, rented, faulty, lost in states:
            row = by.setdefault(division, [0, 0, 0, 0])
            row[1:] = [int(rented), int(faulty), int(lost)]
        return [BankCounts(d, *counts) for d, counts in sorted(by.items())]

    async def active_users(
        self, region: str | None, first: date, last: date, granularity: Granularity, zone: str
    ) -> list[ActiveUsers]:
        """The counters kept at ingest (`analytics_svc/active_users.py`), for every day, week or month that
        overlaps [first, last]: a week or month is counted whole."""
        grain = GRAIN_OF[granularity]
        stmt = text(
            "SELECT period, active, new FROM active_user_counts "
            "WHERE grain = :g AND region = :r AND period BETWEEN :first AND :last AND active > 0 ORDER BY period"
        )
        params = {"g": grain, "r": code_prefix(region) if region else "", "first": period_start(grain, first)}
        rows = await self._rows(stmt, {**params, "last": last})
        return [ActiveUsers(p, int(n), int(new)) for p, n, new in rows]

    async def rentals_per_hour(self, region: str | None, start: datetime, end: datetime) -> list[HourCount]:
        params: dict[str, Any] = {"start": start, "end": end}
        rows = await self._rows(
            _sql(
                """SELECT hour, sum(rentals) FROM rental_rollup_hourly
                WHERE hour >= :start AND hour < :end AND {f0}
                GROUP BY hour ORDER BY hour""",
                f0=_in_region("start_division", region, params),
            ),
            params,
        )
        return [HourCount(h, int(n)) for h, n in rows]

    async def rentals_per_division(
        self, region: str | None, level: DivisionLevel, start: datetime, end: datetime
    ) -> list[Count]:
        params: dict[str, Any] = {"start": start, "end": end}
        rows = await self._rows(
            _sql(
                """SELECT {f0} AS d, sum(rentals) AS n FROM rental_rollup_hourly
                WHERE hour >= :start AND hour < :end AND {f1}
                GROUP BY 1 ORDER BY n DESC, d""",
                f0=_level("start_division", level),
                f1=_in_region("start_division", region, params),
            ),
            params,
        )
        return [Count(d, int(n)) for d, n in rows]

    async def rentals_per_cell(self, region: str | None, start: datetime, end: datetime) -> list[Count]:
        params: dict[str, Any] = {"start": start, "end": end}
        rows = await self._rows(
            _sql(
                """SELECT start_cell, sum(rentals) AS n FROM rental_rollup_hourly
                WHERE hour >= :start AND hour < :end AND start_cell <> ''
                  AND {f0}
                GROUP BY 1 ORDER BY n DESC, start_cell""",
                f0=_in_region("start_division", region, params),
            ),
            params,
        )
        return [Count(c, int(n)) for c, n in rows]

    async def flows(self, region: str | None, level: DivisionLevel, start: datetime, end: datetime) -> list[Flow]:
        params: dict[str, Any] = {"start": start, "end": end}
        origin_in = _in_region("start_division", region, params, "p1")
        destination_in = _in_region("return_division", region, params, "p2")
        rows = await self._rows(
            _sql(
                """SELECT {f0} AS o, {f1} AS d,
                  sum(returned) AS n FROM rental_rollup_hourly
                WHERE hour >= :start AND hour < :end AND returned > 0 AND return_division <> ''
                  AND ({f2} OR {f3})
                GROUP BY 1, 2 ORDER BY n DESC, o, d""",
                f0=_level("start_division", level),
                f1=_level("return_division", level),
                f2=origin_in,
                f3=destination_in,
            ),
            params,
        )
        return [Flow(o, d, int(n)) for o, d, n in rows]
