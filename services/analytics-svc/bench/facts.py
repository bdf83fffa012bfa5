"""The 10 M-fact benchmark (issue 11): generate N rental facts, their users' active days and first
rentals inside PostgreSQL (`generate_series`, no Python loop), in a database migrated exactly like the
service's, build the hourly rollup with the service's own job, then time every operator analysis through
the service's own store (`PostgresStore`), as the endpoints call it.

    .venv/bin/python services/analytics-svc/bench/facts.py \\
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/pb_bench_analytics --facts 10000000

The database named in --url is dropped and created again. Prints one JSON document with the figures.
"""

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import h3
from sqlalchemy import text

from analytics_svc.active_users import rebuild
from analytics_svc.analyses.repository import PostgresStore
from analytics_svc.rollup.service import refresh
from contracts.regions import DivisionLevel
from kit.db import make_engine, make_sessionmaker, unit_of_work
from kit.testing import ensure_database, migrate

SERVICE_DIR = Path(__file__).resolve().parents[1]
DISTRICTS = ["440303", "440304", "440305", "440306", "440307", "440308", "440309", "110101", "110105", "310115"]
START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 90

_FACTS = text(
    """
    INSERT INTO rental_facts (rental_id, user_id, bank_id, cabinet_id, slot, started_at, ended_at,
        return_cabinet_id, duration_seconds, fee_fen, start_division, start_cell, return_division,
        return_cell, purchased)
    SELECT md5('r' || i)::uuid, md5('u' || (i * 7919 % CAST(:users AS bigint)))::uuid, 'PB-' || (i % 50000),
           'CAB-' || (i % 5000), 1 + i % 8, s, s + d * interval '1 second', 'CAB-' || ((i * 31) % 5000), d,
           150 * (1 + d / 3600), (CAST(:districts AS text[]))[1 + i % 10],
           (CAST(:cells AS text[]))[1 + (i % 10) * 80 + (i * 13) % 80],
           (CAST(:districts AS text[]))[1 + (i / 7) % 10],
           (CAST(:cells AS text[]))[1 + ((i / 7) % 10) * 80 + (i * 17) % 80], false
    FROM (SELECT i, CAST(:start AS timestamptz)
                   + (hashint8(i) % (:days * 86400) + :days * 86400) % (:days * 86400) * interval '1 second' AS s,
                 60 + (hashint8(-i) % 10800 + 10800) % 10800 AS d
          FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i) AS g
    """
)


async def _timed(run: Callable[[], Awaitable[Any]], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a scratch database (dropped and created)")
    parser.add_argument("--facts", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    await ensure_database(args.url, recreate=True)
    migrate(SERVICE_DIR, args.url)
    engine = make_engine(args.url, 4)
    sessionmaker = make_sessionmaker(engine)
    # 800 real H3 cells (the heat map asks for their centres), 80 per district.
    cells = sorted(h3.grid_disk(h3.latlng_to_cell(22.54, 114.05, 8), 16))[:800]
    figures: dict[str, Any] = {"facts": args.facts, "users": args.users, "days": DAYS, "cells": len(cells)}

    started = time.perf_counter()
    for first in range(1, args.facts + 1, args.chunk):
        last = min(first + args.chunk - 1, args.facts)
        async with unit_of_work(sessionmaker) as session:
            await session.execute(
                _FACTS,
                {
                    "first": first,
                    "last": last,
                    "users": args.users,
                    "districts": DISTRICTS,
                    "cells": cells,
                    "start": START,
                    "days": DAYS,
                },
            )
        print(f"facts: {last:,}", flush=True)
    load_s = time.perf_counter() - started
    figures["load_s"] = round(load_s, 1)
    figures["load_rows_per_s"] = round(args.facts / load_s)

    started = time.perf_counter()
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            text(
                """INSERT INTO user_days (day, user_id, division)
                SELECT DISTINCT (started_at AT TIME ZONE 'Asia/Shanghai')::date, user_id, start_division
                FROM rental_facts"""
            )
        )
        await session.execute(
            text(
                """INSERT INTO user_facts (user_id, registered_at, first_rental_at)
                SELECT user_id, min(started_at) - interval '1 day', min(started_at) FROM rental_facts GROUP BY 1"""
            )
        )
        await session.execute(
            text("INSERT INTO rollup_dirty_hours SELECT DISTINCT date_trunc('hour', started_at) FROM rental_facts")
        )
    figures["user_days_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    async with unit_of_work(sessionmaker) as session:
        await rebuild(session, ZoneInfo("Asia/Shanghai"))  # what ingest keeps (active_users.record), in bulk
    figures["active_user_counts_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    hours = await refresh(sessionmaker)
    figures["rollup_hours"] = hours
    figures["rollup_build_s"] = round(time.perf_counter() - started, 1)
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        sizes = await conn.execute(
            text(
                """SELECT relname, pg_total_relation_size(oid) FROM pg_class
                WHERE relname IN ('rental_facts', 'rental_rollup_hourly', 'user_days', 'active_user_periods',
                  'active_user_counts')"""
            )
        )
        figures["sizes_mb"] = {name: round(size / 2**20) for name, size in sizes.all()}
        figures["rows"] = {
            table: int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())  # noqa: S608
            for table in (
                "rental_facts",
                "user_days",
                "user_facts",
                "rental_rollup_hourly",
                "active_user_periods",
                "active_user_counts",
            )
        }

    month_start = START + timedelta(days=30)
    first_day = date(2026, 10, 1)

    def query(name: str, call: Callable[[PostgresStore], Awaitable[Any]]) -> tuple[str, Callable[[], Awaitable[Any]]]:
        async def run() -> Any:
            async with sessionmaker() as session:
                return await call(PostgresStore(session))

        return name, run

    analyses = [
        query(
            "rentals_per_hour_city_30d",
            lambda s: s.rentals_per_hour("440300", month_start, month_start + timedelta(days=30)),
        ),
        query(
            "regions_ranked_30d",
            lambda s: s.rentals_per_division(
                None, DivisionLevel.DISTRICT, month_start, month_start + timedelta(days=30)
            ),
        ),
        query("heat_map_7d", lambda s: s.rentals_per_cell(None, month_start, month_start + timedelta(days=7))),
        query(
            "flows_30d", lambda s: s.flows(None, DivisionLevel.DISTRICT, month_start, month_start + timedelta(days=30))
        ),
        query(
            "dau_30d", lambda s: s.active_users(None, first_day, first_day + timedelta(days=29), "day", "Asia/Shanghai")
        ),
        query(
            "dau_30d_city",
            lambda s: s.active_users("440300", first_day, first_day + timedelta(days=29), "day", "Asia/Shanghai"),
        ),
        query(
            "wau_4w_district",
            lambda s: s.active_users("440304", first_day, first_day + timedelta(days=27), "week", "Asia/Shanghai"),
        ),
        query(
            "mau_month",
            lambda s: s.active_users(None, first_day, first_day + timedelta(days=30), "month", "Asia/Shanghai"),
        ),
    ]
    figures["analyses"] = {name: await _timed(run, args.repeats) for name, run in analyses}
    await engine.dispose()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
