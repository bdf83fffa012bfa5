"""The measurement behind analytics-svc's store (docs/analytics.md): the same rental facts and the
same analyses in PostgreSQL (raw facts, and an hourly rollup) and in embedded DuckDB.

Not part of the service or its tests; needs `duckdb` and `asyncpg` (duckdb is not in the lock):
    uv venv /tmp/duck && uv pip install --python /tmp/duck/bin/python duckdb asyncpg
    /tmp/duck/bin/python services/analytics-svc/bench/store_choice.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-not-found,unused-ignore]
import duckdb  # type: ignore[import-not-found,unused-ignore]

DISTRICTS = ["440303", "440304", "440305", "440306", "440307", "440308", "440309", "110101", "110105", "310115"]
START = datetime(2026, 9, 1, tzinfo=UTC)

QUERIES = {
    "hour_of_day_city_30d": """SELECT extract(hour FROM started_at) AS h, count(*) FROM rental_facts
        WHERE started_at >= $1 AND started_at < $1 + INTERVAL '30 days' AND start_division LIKE '4403%' GROUP BY h""",
    "dau_30d": """SELECT date_trunc('day', started_at) AS d, count(DISTINCT user_id) FROM rental_facts
        WHERE started_at >= $1 AND started_at < $1 + INTERVAL '30 days' GROUP BY d""",
    "mau_30d": """SELECT count(DISTINCT user_id) FROM rental_facts
        WHERE started_at >= $1 AND started_at < $1 + INTERVAL '30 days'""",
    "od_matrix_30d": """SELECT start_division, return_division, count(*) FROM rental_facts
        WHERE started_at >= $1 AND started_at < $1 + INTERVAL '30 days' GROUP BY 1, 2""",
    "heat_map_7d": """SELECT start_cell, count(*) FROM rental_facts
        WHERE started_at >= $1 AND started_at < $1 + INTERVAL '7 days' GROUP BY 1 ORDER BY 2 DESC""",
}
ROLLUP_QUERIES = {
    "hour_of_day_city_30d": """SELECT extract(hour FROM hour) AS h, sum(borrows) FROM borrows_hourly
        WHERE hour >= $1 AND hour < $1 + INTERVAL '30 days' AND division LIKE '4403%' GROUP BY h""",
    "heat_map_7d": """SELECT cell, sum(borrows) FROM borrows_hourly
        WHERE hour >= $1 AND hour < $1 + INTERVAL '7 days' GROUP BY 1 ORDER BY 2 DESC""",
}


def facts(n: int, users: int, seed: int = 7) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    user_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(users)]
    cells = [f"88411c{n:04x}fffff"[:15] for n in range(800)]
    rows = []
    for _ in range(n):
        at = START + timedelta(seconds=rng.randrange(90 * 86400))
        rows.append(
            (
                uuid.UUID(int=rng.getrandbits(128)),
                rng.choice(user_ids),
                rng.choice(DISTRICTS),
                rng.choice(cells),
                at,
                rng.choice(DISTRICTS),
            )
        )
    return rows


def p95(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), p95(samples)


async def postgres(dsn: str, rows: list[tuple[Any, ...]], repeat: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS rental_facts, borrows_hourly")
    await conn.execute(
        """CREATE TABLE rental_facts (rental_id uuid PRIMARY KEY, user_id uuid, start_division text,
        start_cell text, started_at timestamptz, return_division text);
        CREATE INDEX ON rental_facts (started_at)"""
    )
    t = time.perf_counter()
    await conn.copy_records_to_table("rental_facts", records=rows)
    copy_s = time.perf_counter() - t
    batch = rows[:20_000]
    await conn.execute("CREATE TEMP TABLE ins (LIKE rental_facts)")
    t = time.perf_counter()
    await conn.executemany("INSERT INTO ins VALUES ($1, $2, $3, $4, $5, $6)", batch)
    insert_rate = len(batch) / (time.perf_counter() - t)
    await conn.execute(
        """CREATE TABLE borrows_hourly AS SELECT date_trunc('hour', started_at) AS hour,
        start_division AS division, start_cell AS cell, count(*) AS borrows FROM rental_facts GROUP BY 1, 2, 3;
        CREATE INDEX ON borrows_hourly (hour); ANALYZE rental_facts; ANALYZE borrows_hourly"""
    )
    out: dict[str, Any] = {"copy_rows_per_s": round(len(rows) / copy_s), "insert_rows_per_s": round(insert_rate)}
    loop = asyncio.get_running_loop()
    for label, queries in (("raw", QUERIES), ("rollup", ROLLUP_QUERIES)):
        for name, sql in queries.items():
            samples = []
            for _ in range(repeat):
                t = loop.time()
                await conn.fetch(sql, START + timedelta(days=30))
                samples.append((loop.time() - t) * 1000)
            out[f"{label}:{name}"] = (round(statistics.median(samples), 1), round(p95(samples), 1))
    await conn.execute("DROP TABLE rental_facts, borrows_hourly")
    await conn.close()
    return out


def duck(rows: list[tuple[Any, ...]], repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = duckdb.connect(str(Path(tmp) / "facts.duckdb"))
        db.execute(
            """CREATE TABLE rental_facts (rental_id uuid PRIMARY KEY, user_id uuid, start_division text,
            start_cell text, started_at timestamptz, return_division text)"""
        )
        csv_path = Path(tmp) / "facts.csv"
        with csv_path.open("w") as f:
            for r in rows[20_000:]:
                f.write(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4].isoformat()},{r[5]}\n")
        t = time.perf_counter()
        db.execute(f"COPY rental_facts FROM '{csv_path}' (HEADER false)")
        copy_rate = (len(rows) - 20_000) / (time.perf_counter() - t)
        t = time.perf_counter()
        db.executemany("INSERT INTO rental_facts VALUES (?, ?, ?, ?, ?, ?)", rows[:20_000])
        insert_rate = 20_000 / (time.perf_counter() - t)
        out: dict[str, Any] = {"copy_rows_per_s": round(copy_rate), "insert_rows_per_s": round(insert_rate)}
        for name, sql in QUERIES.items():

            def run(sql: str = sql) -> Any:
                return db.execute(sql, [START + timedelta(days=30)]).fetchall()

            out[f"raw:{name}"] = tuple(round(v, 1) for v in timed(run, repeat))
        db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = facts(args.facts, args.users)
    print("duckdb", duck(rows, args.repeat), flush=True)
    print("postgres", asyncio.run(postgres(args.dsn, rows, args.repeat)))


if __name__ == "__main__":
    main()
