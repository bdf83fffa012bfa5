"""Exact active users (DAU, WAU, MAU; new and returning) kept at ingest, so a query reads a few counters
instead of counting distinct users over `user_days` (16.8 s at p95 for 30 days of 10 M facts).

`active_user_periods` holds each user once per day, ISO week and month they were active, with the region
prefixes they were active in ('' for everywhere, then the province `44`, the city `4403` and the district
`440304` of each division: the prefixes a region filter matches, `contracts.regions.code_prefix`).
`active_user_counts` counts, per (grain, period, prefix), the users of that set (`active`) and those whose
first rental ever falls in the period (`new`). A prefix added to a user's period adds one to `active`
(a second rental in the same district, city or day adds nothing: the count is distinct, exactly); a first
rental that moves earlier (a late event) moves the user's `new` from the period it was in to the period
it is in now, for every prefix the user has there.

Every change is made under a transaction-scoped advisory lock per user (taken in user id order), so
replicas applying events of one user at once are serialised, and the counters are upserted in key order."""

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

GRAINS = {"d": "day", "w": "week", "m": "month"}
GRAIN_OF = {unit: grain for grain, unit in GRAINS.items()}
UserDay = tuple[date, Any, str]  # local day, user id, division ('' unknown)


def period_start(grain: str, day: date) -> date:
    if grain == "w":
        return day - timedelta(days=day.weekday())
    if grain == "m":
        return day.replace(day=1)
    return day


def prefixes(division: str) -> set[str]:
    return {""} if not division else {"", division[:2], division[:4], division}


async def record(
    session: AsyncSession, zone: ZoneInfo, days: Iterable[UserDay], first_rentals: dict[Any, datetime]
) -> None:
    """Users active on these days (in these divisions), and the earliest rental start of each user in
    `first_rentals` (kept in `user_facts.first_rental_at` as the least ever seen)."""
    days = set(days)
    users = sorted({u for _, u, _ in days} | set(first_rentals), key=str)
    if not users:
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(u::text, 0)) FROM unnest(CAST(:u AS uuid[])) AS u"),
        {"u": users},
    )
    before: dict[Any, datetime | None] = dict(
        (
            await session.execute(
                text("SELECT user_id, first_rental_at FROM user_facts WHERE user_id = ANY(CAST(:u AS uuid[]))"),
                {"u": users},
            )
        ).all()
    )
    if first_rentals:
        await session.execute(
            text(
                "INSERT INTO user_facts (user_id, first_rental_at) "
                "SELECT * FROM unnest(CAST(:u AS uuid[]), CAST(:at AS timestamptz[])) "
                "ON CONFLICT (user_id) DO UPDATE SET "
                "first_rental_at = least(user_facts.first_rental_at, excluded.first_rental_at)"
            ),
            {"u": list(first_rentals), "at": list(first_rentals.values())},
        )
    first_day: dict[Any, date | None] = {}
    moved: dict[Any, tuple[date | None, date]] = {}
    for user in users:
        old, candidate = before.get(user), first_rentals.get(user)
        known = [at for at in (old, candidate) if at is not None]
        first = min(known).astimezone(zone).date() if known else None
        first_day[user] = first
        if first is not None and (old is None or min(known) != old):
            moved[user] = (old.astimezone(zone).date() if old is not None else None, first)

    wanted: dict[tuple[str, date, Any], set[str]] = defaultdict(set)
    for day, user, division in days:
        for grain in GRAINS:
            wanted[(grain, period_start(grain, day), user)] |= prefixes(division)
    keys = set(wanted)
    for user, (old_day, new_day) in moved.items():
        for grain in GRAINS:
            keys.add((grain, period_start(grain, new_day), user))
            if old_day is not None:
                keys.add((grain, period_start(grain, old_day), user))
    ordered = sorted(keys, key=lambda k: (k[0], k[1], str(k[2])))
    found = await session.execute(
        text(
            "SELECT a.grain, a.period, a.user_id, a.prefixes FROM active_user_periods a "
            "JOIN unnest(CAST(:g AS text[]), CAST(:p AS date[]), CAST(:u AS uuid[])) AS k(grain, period, user_id) "
            "ON a.grain = k.grain AND a.period = k.period AND a.user_id = k.user_id"
        ),
        {"g": [k[0] for k in ordered], "p": [k[1] for k in ordered], "u": [k[2] for k in ordered]},
    )
    have: dict[tuple[str, date, Any], set[str]] = {(g, p, u): set(pre) for g, p, u, pre in found.all()}

    delta: dict[tuple[str, date, str], list[int]] = defaultdict(lambda: [0, 0])
    for user, (old_day, new_day) in moved.items():
        for grain in GRAINS:
            was = period_start(grain, old_day) if old_day is not None else None
            now = period_start(grain, new_day)
            if was == now:
                continue
            for prefix in have.get((grain, was, user), set()) if was is not None else set():
                delta[(grain, was, prefix)][1] -= 1  # type: ignore[index]
            for prefix in have.get((grain, now, user), set()):
                delta[(grain, now, prefix)][1] += 1
    changed: dict[tuple[str, date, Any], set[str]] = {}
    for key, want in wanted.items():
        grain, start, user = key
        old_set = have.get(key, set())
        added = want - old_set
        if not added:
            continue
        changed[key] = old_set | want
        first = first_day.get(user)
        is_new = first is not None and period_start(grain, first) == start
        for prefix in added:
            delta[(grain, start, prefix)][0] += 1
            delta[(grain, start, prefix)][1] += int(is_new)

    if changed:
        rows = sorted(changed.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2])))
        await session.execute(
            text(
                "INSERT INTO active_user_periods (grain, period, user_id, prefixes) "
                "SELECT k.grain, k.period, k.user_id, ARRAY(SELECT jsonb_array_elements_text(k.prefixes)) "
                "FROM unnest(CAST(:g AS text[]), CAST(:p AS date[]), CAST(:u AS uuid[]), CAST(:pre AS jsonb[])) "
                "AS k(grain, period, user_id, prefixes) "
                "ON CONFLICT (grain, period, user_id) DO UPDATE SET prefixes = excluded.prefixes"
            ),
            {
                "g": [k[0] for k, _ in rows],
                "p": [k[1] for k, _ in rows],
                "u": [k[2] for k, _ in rows],
                "pre": [json.dumps(sorted(v)) for _, v in rows],
            },
        )
    counts = sorted((k, v) for k, v in delta.items() if v != [0, 0])
    if counts:
        await session.execute(
            text(
                "INSERT INTO active_user_counts AS c (grain, period, region, active, new) "
                "SELECT * FROM unnest(CAST(:g AS text[]), CAST(:p AS date[]), CAST(:r AS text[]), "
                "CAST(:a AS int[]), CAST(:n AS int[])) "
                "ON CONFLICT (grain, period, region) DO UPDATE SET "
                "active = c.active + excluded.active, new = c.new + excluded.new"
            ),
            {
                "g": [k[0] for k, _ in counts],
                "p": [k[1] for k, _ in counts],
                "r": [k[2] for k, _ in counts],
                "a": [v[0] for _, v in counts],
                "n": [v[1] for _, v in counts],
            },
        )


# Both tables rebuilt from `user_days` and `user_facts` (the bench's bulk load; a check in the tests).
REBUILD = [
    "TRUNCATE active_user_periods, active_user_counts",
    """INSERT INTO active_user_periods (grain, period, user_id, prefixes)
    SELECT g.grain, date_trunc(g.unit, d.day)::date, d.user_id, array_agg(DISTINCT p.prefix ORDER BY p.prefix)
    FROM user_days d
    CROSS JOIN (VALUES ('d', 'day'), ('w', 'week'), ('m', 'month')) AS g(grain, unit)
    CROSS JOIN LATERAL unnest(CASE WHEN d.division = '' THEN ARRAY['']
      ELSE ARRAY['', left(d.division, 2), left(d.division, 4), d.division] END) AS p(prefix)
    GROUP BY 1, 2, 3""",
    """INSERT INTO active_user_counts (grain, period, region, active, new)
    SELECT a.grain, a.period, p.prefix, count(*), count(*) FILTER (
      WHERE date_trunc(g.unit, (u.first_rental_at AT TIME ZONE :zone)::date)::date = a.period)
    FROM active_user_periods a
    JOIN (VALUES ('d', 'day'), ('w', 'week'), ('m', 'month')) AS g(grain, unit) ON g.grain = a.grain
    CROSS JOIN LATERAL unnest(a.prefixes) AS p(prefix)
    LEFT JOIN user_facts u ON u.user_id = a.user_id
    GROUP BY 1, 2, 3""",
]


async def rebuild(session: AsyncSession, zone: ZoneInfo) -> None:
    for sql in REBUILD:
        await session.execute(text(sql), {"zone": zone.key} if ":zone" in sql else {})
