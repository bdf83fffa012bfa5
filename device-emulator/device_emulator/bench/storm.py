"""The connect storm (`--broker-restart`): Mosquitto restarted under the connected swarm, timed from the
outside until every device is back, device-svc shows each cabinet online again and a borrow succeeds again;
and how many swarm cabinets device-svc shows online (also used before the load)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from device_emulator.bench.presets import ROOT
from device_emulator.bench.report import say, summarize
from device_emulator.bench.summary import STORM_ANSWER_BUDGET_MS, errors_but_ejected
from device_emulator.bench.swarm import Swarm
from device_emulator.bench.users import UserPool

if TYPE_CHECKING:
    from device_emulator.bench.run import Bench


async def cabinets_online(bench: Bench, pool: UserPool, ids: set[str], seen_after: datetime | None = None) -> int:
    """How many of `ids` device-svc shows online (and, with `seen_after`, heard from since then), from
    its presence summary: one count query, where listing every cabinet each time would load device-svc
    in the very storm being measured. Exact while at most 1,000 cabinets are silent; a lower bound
    before that."""
    params: dict[str, str | int] = {"silent_limit": 1000}
    if seen_after is not None:
        params["heard_since"] = seen_after.isoformat()
    headers = await pool.admin_auth()
    r = await pool.http.get(f"{bench.device_url}/v1/ops/presence", params=params, headers=headers, timeout=30)
    r.raise_for_status()
    body = r.json()
    silent = len(ids.intersection(body["silent"]))
    if body["silent_total"] > len(body["silent"]):  # some not listed: assume the worst of them
        silent = max(silent, body["silent_total"] - (body["cabinets"] - len(ids)))
    return len(ids) - silent


async def wait_cabinets_online(bench: Bench, pool: UserPool, ids: set[str], timeout_s: float) -> int:
    """How many swarm cabinets device-svc shows online (waits until all or timeout)."""
    deadline = time.monotonic() + timeout_s
    online = 0
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            online = await cabinets_online(bench, pool, ids)
        if online >= len(ids) or time.monotonic() > deadline:
            return online
        await asyncio.sleep(3.0)  # listing every cabinet is not free for device-svc


async def broker_restart(bench: Bench, swarm: Swarm, pool: UserPool) -> dict[str, Any]:
    """The connect storm: SIGTERM Mosquitto, start it again (`stack.py up`), and time from the SIGTERM until
    every device is connected again, until device-svc shows each swarm cabinet online and heard from since
    the SIGTERM (`storm_online_s`), and until a borrow succeeds again (`storm_rent_again_s`). Borrows go on
    through the storm at --unlock-rate (at least 1/s) on cabinets connected from the swarm's side."""
    if bench.state_dir is None:
        return {"error": "PB_STATE_DIR not set"}
    pid = int((bench.state_dir / "mosquitto" / "mosquitto.pid").read_text().strip())
    total = len(swarm.devices)
    ids = {d.device_id for d in swarm.devices}
    say(f"broker restart: SIGTERM mosquitto (pid {pid}), then `stack.py up --stack {bench.stack}`")
    start = time.monotonic()
    killed_wall = datetime.now(UTC)
    os.kill(pid, signal.SIGTERM)
    stop = asyncio.Event()
    cycles: set[asyncio.Task[Any]] = set()
    rate = max(1.0, bench.args.unlock_rate)
    storm_end = start + bench.args.storm_timeout_s
    pacer = asyncio.create_task(
        bench.unlock_pacer(pool, swarm, storm_end, cycles, bench.storm_results, rate=rate, stop=stop)
    )
    while swarm.connected > 0 and time.monotonic() - start < 10:  # noqa: ASYNC110 (a counter, no event)
        await asyncio.sleep(0.05)
    dropped_at = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        bench.stack_tool,
        "up",
        "--stack",
        bench.stack,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=str(ROOT),
    )
    await proc.wait()
    up_at = time.monotonic()
    curve: list[tuple[float, float]] = []
    online_curve: list[tuple[float, float]] = []
    connected_s: float | None = None
    online_s: float | None = None
    next_online_check = 0.0
    while time.monotonic() < storm_end:
        now = time.monotonic()
        curve.append((now - start, swarm.connected))
        if connected_s is None and swarm.connected >= total:
            connected_s = now - start
        if online_s is None and now >= next_online_check:
            next_online_check = now + 1.0
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                online = await cabinets_online(bench, pool, ids, seen_after=killed_wall)
                online_curve.append((time.monotonic() - start, online))
                if online >= total:
                    online_s = time.monotonic() - start
        if connected_s is not None and online_s is not None and rent_again_s(bench, start) is not None:
            break
        await asyncio.sleep(0.5)
    stop.set()
    await pacer
    if cycles:
        await asyncio.wait(cycles, timeout=60)
    storm = bench.storm_results
    return {
        "devices": total,
        "reconnected": swarm.connected,
        "all_back_s_after_broker_up": round(connected_s - (up_at - start), 1) if connected_s else None,
        "all_back_s_after_sigterm": round(connected_s, 1) if connected_s is not None else None,
        "online_s_after_sigterm": round(online_s, 1) if online_s is not None else None,
        "rent_again_s_after_sigterm": rent_again_s(bench, start),
        "restart_command_s": round(up_at - dropped_at, 1),  # devices dropped until `stack.py up` returned
        "unlocks": len(storm.attempts),
        "unlocks_over_5s": sum(1 for a in storm.attempts if a.took_ms > STORM_ANSWER_BUDGET_MS),
        "unlock_errors_by_code": dict(storm.unlock_errors),
        "unlock_answer_ms": summarize([a.took_ms for a in storm.attempts]),
        "unlock_error_but_ejected": errors_but_ejected(storm.attempts, bench.ejected),
        "curve": curve,
        "online_curve": online_curve,
    }


def rent_again_s(bench: Bench, since: float) -> float | None:
    """Seconds from `since` until the first storm borrow answered with an active rental."""
    ok = [a.started + a.took_ms / 1000 for a in bench.storm_results.attempts if a.code is None]
    return round(min(ok) - since, 1) if ok else None
