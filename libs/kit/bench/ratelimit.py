"""What a rate limit check costs (kit.ratelimit, issue 15): checks that pass (one upsert each, against the
stack's PostgreSQL), and refusals answered from memory. A scratch database of its own on the test stack's
server, so it never touches a database a running test uses.

    python3 deploy/local/stack.py exec --stack test -- .venv/bin/python libs/kit/bench/ratelimit.py --checks 5000

Prints JSON: wall time per check (p50/p95/p99), process CPU per check, and the load average (a shared machine
makes these noisy; quote them with it)."""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time

from kit.errors import TooManyRequests
from kit.ratelimit import CREATE_INDEX, CREATE_TABLE, Limit, RateLimiter
from kit.testing import kit_database


def _quantiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_us": round(cuts[49] * 1e6, 1), "p95_us": round(cuts[94] * 1e6, 1), "p99_us": round(cuts[98] * 1e6, 1)}


async def main(checks: int, keys: int, concurrency: int) -> dict[str, object]:
    async with kit_database("pb_bench_kit_ratelimit", CREATE_TABLE, CREATE_INDEX) as engine:
        limiter = RateLimiter(engine, {"default": Limit(10**9, 60), "login": Limit(1, 3600)})
        for i in range(keys):  # warm the pool and the prepared statement
            await limiter.check("default", f"user:{i}")

        latencies: list[float] = []

        async def worker(offset: int) -> None:
            for i in range(offset, checks, concurrency):
                started = time.perf_counter()
                await limiter.check("default", f"user:{i % keys}")
                latencies.append(time.perf_counter() - started)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(o) for o in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        passed = {"checks": checks, "per_s": round(checks / wall), "cpu_us_per_check": round(cpu / checks * 1e6, 1)}
        passed |= _quantiles(latencies)

        await limiter.check("login", "addr:flood")  # passes (1 an hour)
        with contextlib.suppress(TooManyRequests):  # the first refusal is counted in the database
            await limiter.check("login", "addr:flood")
        refused_latencies: list[float] = []
        cpu = time.process_time()
        for _ in range(checks):
            started = time.perf_counter()
            try:
                await limiter.check("login", "addr:flood")
            except TooManyRequests:
                refused_latencies.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        assert len(refused_latencies) == checks  # every one from memory
        refused = {"checks": len(refused_latencies), "cpu_us_per_check": round(cpu / checks * 1e6, 2)}
        refused |= _quantiles(refused_latencies)
    return {"passed": passed, "refused_from_memory": refused, "load_average": os.getloadavg()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000, help="distinct subjects the checks cycle through")
    parser.add_argument("--concurrency", type=int, default=8, help="checks in flight (a service's pool is 10)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.checks, args.keys, args.concurrency)), indent=2))
