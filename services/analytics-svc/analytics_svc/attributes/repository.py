"""SQL of the bank and user attribute distributions. Never commits."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.analyses.repository import _in_region, _level, _sql
from contracts.regions import DivisionLevel, code_prefix

# Buckets per attribute, in the order they are reported (each SQL CASE below yields exactly these).
BANK_BUCKETS: dict[str, list[str]] = {
    "age_in_service": ["under 90 days", "90-179 days", "180-364 days", "1-2 years", "2 years or more", "unknown"],
    "charge_cycles": ["0-249", "250-499", "500-749", "750-949", "950-999", "1000 or more", "unknown"],
    "battery_health": ["95-100%", "90-94%", "80-89%", "under 80%", "unknown"],
    "cycle_limit": ["below", "approaching", "reached", "unknown"],
}

_BANKS = """
WITH b AS (SELECT {f0} AS d, model, in_service_at, charge_cycles, health_pct FROM bank_facts WHERE {f1})
SELECT d, 'model', coalesce(model, 'unknown'), count(*) FROM b GROUP BY 1, 2, 3
UNION ALL
SELECT d, 'age_in_service', CASE
    WHEN in_service_at IS NULL THEN 'unknown'
    WHEN in_service_at > :d90 THEN 'under 90 days'
    WHEN in_service_at > :d180 THEN '90-179 days'
    WHEN in_service_at > :d365 THEN '180-364 days'
    WHEN in_service_at > :d730 THEN '1-2 years'
    ELSE '2 years or more' END, count(*) FROM b GROUP BY 1, 2, 3
UNION ALL
SELECT d, 'charge_cycles', CASE
    WHEN charge_cycles IS NULL THEN 'unknown'
    WHEN charge_cycles < 250 THEN '0-249'
    WHEN charge_cycles < 500 THEN '250-499'
    WHEN charge_cycles < 750 THEN '500-749'
    WHEN charge_cycles < 950 THEN '750-949'
    WHEN charge_cycles < 1000 THEN '950-999'
    ELSE '1000 or more' END, count(*) FROM b GROUP BY 1, 2, 3
UNION ALL
SELECT d, 'battery_health', CASE
    WHEN health_pct IS NULL THEN 'unknown'
    WHEN health_pct >= 95 THEN '95-100%'
    WHEN health_pct >= 90 THEN '90-94%'
    WHEN health_pct >= 80 THEN '80-89%'
    ELSE 'under 80%' END, count(*) FROM b GROUP BY 1, 2, 3
UNION ALL
SELECT d, 'cycle_limit', CASE
    WHEN charge_cycles IS NULL THEN 'unknown'
    WHEN charge_cycles >= :budget THEN 'reached'
    WHEN charge_cycles >= :warning THEN 'approaching'
    ELSE 'below' END, count(*) FROM b GROUP BY 1, 2, 3
"""


async def bank_attributes(
    session: AsyncSession, region: str | None, level: DivisionLevel, now: datetime, budget: int, warning: int
) -> list[tuple[str, str, str, int]]:
    """(division, attribute, bucket, banks) for every bank analytics knows."""
    params: dict[str, Any] = {
        "d90": now - timedelta(days=90),
        "d180": now - timedelta(days=180),
        "d365": now - timedelta(days=365),
        "d730": now - timedelta(days=730),
        "budget": budget,
        "warning": warning,
    }
    sql = _sql(_BANKS, f0=_level("division", level), f1=_in_region("division", region, params))
    return [(d, a, b, int(n)) for d, a, b, n in (await session.execute(sql, params)).all()]


USER_BUCKETS: dict[str, list[str]] = {
    "tenure": ["under 30 days", "30-89 days", "90-364 days", "1 year or more", "unknown"],
    "deposit_free": ["yes", "no", "unknown"],
    # The age a user reaches this calendar year (only the birth year is known: at most one year over).
    "age_band": ["under 18", "18-24", "25-34", "35-44", "45-54", "55-64", "65 or more", "unknown"],
}

_USERS = """
WITH u AS (
    SELECT registered_at, credit_level, deposit_free, CAST(:year AS int) - birth_year AS age FROM user_facts f
     WHERE CAST(:prefix AS text) IS NULL
        OR EXISTS (SELECT 1 FROM user_days d WHERE d.user_id = f.user_id AND d.division LIKE :prefix)
)
SELECT 'tenure', CASE
    WHEN registered_at IS NULL THEN 'unknown'
    WHEN registered_at > :d30 THEN 'under 30 days'
    WHEN registered_at > :d90 THEN '30-89 days'
    WHEN registered_at > :d365 THEN '90-364 days'
    ELSE '1 year or more' END, count(*) FROM u GROUP BY 1, 2
UNION ALL
SELECT 'credit_level', coalesce(credit_level, 'unknown'), count(*) FROM u GROUP BY 1, 2
UNION ALL
SELECT 'deposit_free', CASE WHEN deposit_free IS NULL THEN 'unknown' WHEN deposit_free THEN 'yes' ELSE 'no' END,
       count(*) FROM u GROUP BY 1, 2
UNION ALL
SELECT 'age_band', CASE
    WHEN age IS NULL THEN 'unknown'
    WHEN age < 18 THEN 'under 18'
    WHEN age < 25 THEN '18-24'
    WHEN age < 35 THEN '25-34'
    WHEN age < 45 THEN '35-44'
    WHEN age < 55 THEN '45-54'
    WHEN age < 65 THEN '55-64'
    ELSE '65 or more' END, count(*) FROM u GROUP BY 1, 2
"""


async def user_attributes(session: AsyncSession, region: str | None, now: datetime) -> list[tuple[str, str, str, int]]:
    """('' or the region, attribute, bucket, users): every user analytics knows, or those who rented in
    `region` (users have no place of their own)."""
    params: dict[str, Any] = {
        "prefix": None if region is None else code_prefix(region) + "%",
        "d30": now - timedelta(days=30),
        "d90": now - timedelta(days=90),
        "d365": now - timedelta(days=365),
        "year": now.year,
    }
    rows = (await session.execute(text(_USERS), params)).all()
    return [(region or "", a, b, int(n)) for a, b, n in rows]
