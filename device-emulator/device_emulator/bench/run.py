"""The swarm benchmark: many cabinets (own MQTT connection and credentials each) sending telemetry while
simulated users borrow and return through the public HTTP APIs; everything measured from the outside.

    python -m device_emulator.bench --devices 100 --telemetry-rate 50 --unlock-rate 5 --duration 30 \
        [--banks 50 --time-scale 3600]

With --banks N, N idle banks with their own module (own MQTT connection and credentials each) report their
position on a schedule compressed --time-scale times, and the oldest stored position among them is read from
device-svc's ops API (location freshness, 7.2: at most 4 h; see device_emulator.bench.freshness).

Reads the stack environment (`deploy/local/stack.py exec --stack run -- ...` sets it): *_SVC_URL,
MQTT_HOST/PORT/USERNAME/PASSWORD, KAFKA_BOOTSTRAP, PB_FLEET_FILE, PB_STATE_DIR, PB_STACK, PB_STACK_TOOL.
Writes <out>/summary.json, details.json, index.md and SVG charts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from contracts.mqtt import Eject
from device_emulator.bench import freshness, probes
from device_emulator.bench.report import histogram_svg, line_svg, percentile, ratio, summarize, write_report
from device_emulator.bench.swarm import Swarm, SwarmDevice, read_fleet
from device_emulator.bench.users import ApiError, BenchUser, Urls, UserPool

ROOT = Path(__file__).resolve().parents[3]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m device_emulator.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100, help="swarm cabinets (each its own MQTT connection)")
    p.add_argument("--slots", type=int, default=8, help="slots per cabinet when provisioning")
    p.add_argument("--telemetry-rate", type=float, default=50.0, help="heartbeats per second, whole swarm")
    p.add_argument("--unlock-rate", type=float, default=5.0, help="borrows started per second (0: none)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--banks", type=int, default=0, help="idle bank modules reporting positions (freshness)")
    p.add_argument("--time-scale", type=float, default=3600.0, help="bank time per real second (3600: 4 h become 4 s)")
    p.add_argument("--bank-report-every-s", type=float, default=3 * 3600.0, help="a bank's position period, bank time")
    p.add_argument("--bank-jitter", type=float, default=0.2, help="+- fraction of the position period")
    p.add_argument(
        "--freshness-sample-s", type=float, default=0.0, help="seconds between readings (default: budget / 8)"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (device choice, jitter; also provisioning)")
    p.add_argument(
        "--skip-devices",
        type=int,
        default=None,
        help="first fleet entries left alone (default: 3 on the run stack, whose emulator runs them; 0 otherwise)",
    )
    p.add_argument("--no-provision", action="store_true", help="use the fleet file as it is (no seed)")
    p.add_argument(
        "--real-provisioning",
        action="store_true",
        help="seed through `stack.py seed` (device-svc's own CLI, at most 9,999 cabinets)",
    )
    p.add_argument("--fleet-file", type=Path, default=None, help="default $PB_FLEET_FILE")
    p.add_argument("--hold-s", type=float, default=1.0, help="seconds a user keeps the bank")
    p.add_argument("--users", type=int, default=0, help="simulated users (default: enough for the unlock rate)")
    p.add_argument("--connect-rate", type=float, default=400.0, help="new MQTT connections per second")
    p.add_argument("--motor-ms", type=float, default=0.0, help="cabinet eject delay before answering")
    p.add_argument("--no-floors", action="store_true", help="skip the floor measurements")
    p.add_argument("--smoke", action="store_true", help="few floor samples (CI smoke run)")
    p.add_argument(
        "--broker-restart",
        action="store_true",
        help="after the load, restart Mosquitto and time until every device is back",
    )
    p.add_argument("--drain-s", type=float, default=10.0, help="max quiet seconds waiting for telemetry")
    p.add_argument("--drain-max-s", type=float, default=60.0, help="max seconds waiting for telemetry in all")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@dataclass
class Results:
    unlock_ms: list[float] = field(default_factory=list)
    eject_seen_ms: list[float] = field(default_factory=list)
    billing_stop_ms: list[float] = field(default_factory=list)
    billing_parts_ms: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    unlock_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    stop_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    unlocks_started: int = 0
    unlocks_skipped: int = 0  # the pacer found no idle user or cabinet
    users_retired: int = 0  # left out after an error (they may hold a rental the platform completed late)
    timeline: list[dict[str, float]] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        env = os.environ
        self.stack = env.get("PB_STACK", "run")
        self.state_dir = Path(env["PB_STATE_DIR"]) if env.get("PB_STATE_DIR") else None
        self.stack_tool = env.get("PB_STACK_TOOL", str(ROOT / "deploy" / "local" / "stack.py"))
        self.urls = Urls(
            user=env.get("USER_SVC_URL", "http://127.0.0.1:8001"),
            billing=env.get("BILLING_SVC_URL", "http://127.0.0.1:8003"),
            asset=env.get("ASSET_SVC_URL", "http://127.0.0.1:8004"),
            notify=env.get("NOTIFY_SVC_URL", "http://127.0.0.1:8005"),
        )
        self.device_url = env.get("DEVICE_SVC_URL", "http://127.0.0.1:8002")
        self.mqtt_user = env.get("MQTT_USERNAME", "device-svc")
        self.mqtt_password = env.get("MQTT_PASSWORD", "")
        self.bootstrap = env.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092")
        fleet = args.fleet_file or env.get("PB_FLEET_FILE")
        if not fleet:
            raise SystemExit("no fleet file: pass --fleet-file or run through deploy/local/stack.py exec")
        self.fleet_file = Path(fleet)
        self.skip = args.skip_devices if args.skip_devices is not None else (3 if self.stack == "run" else 0)
        self.rng = random.Random(args.seed)
        self.results = Results()
        self.notes: list[str] = []
        self.eject_seen: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.telemetry_until = math.inf
        self.probe: freshness.FreshnessProbe | None = None
        self.details: dict[str, Any] = {"params": {k: str(v) for k, v in vars(args).items()}}

    # ------------------------------------------------------------------ phases

    def provision(self) -> None:
        """Seed skip + devices cabinets: through `stack.py seed` (device_svc.provision, real password-hash cost)
        with --real-provisioning, else through device_emulator.bench.provision (same code, no cabinet cap)."""
        total = self.skip + self.args.devices
        seed_args = ["--cabinets", str(total), "--slots", str(self.args.slots), "--seed", str(self.args.seed)]
        if self.args.banks > 0:
            seed_args += ["--bank-modules", str(self.args.banks), "--bank-modules-last"]
        env = dict(os.environ)
        if self.args.real_provisioning:
            cmd = [sys.executable, self.stack_tool, "seed", "--stack", self.stack, "--", *seed_args]
        else:
            cmd = [sys.executable, "-m", "device_emulator.bench.provision", *seed_args]
            cmd += ["--fleet-out", str(self.fleet_file)]
            env["DATABASE_URL"] = env.get("DEVICE_DATABASE_URL", env.get("DATABASE_URL", ""))
        say(f"provisioning {total} cabinets, {self.args.banks} bank modules: {' '.join(cmd[1:])}")
        start = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
        took = time.monotonic() - start
        self.details["provision"] = {
            "cabinets": total,
            "bank_modules": self.args.banks,
            "seconds": round(took, 2),
            "rc": done.returncode,
            "real_hash_cost": self.args.real_provisioning,
            "output": done.stdout.strip()[-300:],
        }
        say(f"provisioned in {took:.1f} s: {done.stdout.strip()[-300:]}")
        if done.returncode != 0:
            raise SystemExit(f"provisioning failed:\n{done.stdout}\n{done.stderr}")

    async def floors(self) -> dict[str, Any]:
        host, port = os.environ.get("MQTT_HOST", "127.0.0.1"), int(os.environ.get("MQTT_PORT", "1883"))
        out: dict[str, Any] = {}
        k = 10 if self.args.smoke else 1
        user, pw = self.mqtt_user, self.mqtt_password
        for name, coro in (
            ("mqtt_round_trip_ms", probes.mqtt_round_trip(host, port, user, pw, samples=200 // k)),
            ("kafka_round_trip_ms", probes.kafka_round_trip(self.bootstrap, 50 // k)),
            ("kafka_round_trip_default_fetch_wait_ms", probes.kafka_round_trip(self.bootstrap, 20 // k, 500)),
            ("mqtt_subscriber", probes.mqtt_subscriber_rate(host, port, user, pw, count=20_000 // k)),
            ("aiomqtt_subscriber", probes.aiomqtt_subscriber_rate(host, port, user, pw, count=20_000 // k)),
        ):
            try:
                out[name] = await coro
            except Exception as exc:  # a floor that cannot be measured is reported, not fatal
                out[name] = {"error": repr(exc)}
            say(f"floor {name}: {out[name]}")
        return out

    def on_eject(self, device_id: str, _cmd: Eject, at: float) -> None:
        self.eject_seen[device_id] = at

    async def cycle(self, pool: UserPool, user: BenchUser, device: SwarmDevice) -> bool:
        """Borrow, hold, return, watch billing stop. True when the user is free for another rental (after a
        failed unlock the platform may still complete it later: such a user is retired)."""
        r = self.results
        self.eject_seen.pop(device.device_id, None)
        start = time.monotonic()
        try:
            borrowed = await pool.borrow(user, device.device_id)
        except ApiError as exc:
            r.unlock_errors[exc.code] += 1
            return exc.status < 500 and exc.code != "active_rental_exists"
        except httpx.HTTPError as exc:
            r.unlock_errors[type(exc).__name__] += 1
            return False
        done = time.monotonic()
        r.unlock_ms.append((done - start) * 1000)
        seen = self.eject_seen.pop(device.device_id, None)
        if seen is not None:
            r.eject_seen_ms.append((seen - start) * 1000)
        await asyncio.sleep(self.args.hold_s)
        try:
            _, sent_at = await device.return_bank(borrowed.bank_id, borrowed.slot)
            parts = await pool.wait_stopped(user, borrowed.rental_id)
        except (ApiError, httpx.HTTPError, TimeoutError) as exc:
            r.stop_errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
            return False
        for name, at in parts.items():
            r.billing_parts_ms[name].append((at - sent_at) * 1000)
        r.billing_stop_ms.append((max(parts.values()) - sent_at) * 1000)
        return True

    async def unlock_pacer(self, pool: UserPool, swarm: Swarm, until: float, tasks: set[asyncio.Task[Any]]) -> None:
        if self.args.unlock_rate <= 0:
            return
        idle_users = collections.deque(pool.users)
        busy_devices: set[str] = set()
        interval = 1.0 / self.args.unlock_rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()

        async def run_one(user: BenchUser, device: SwarmDevice) -> None:
            reusable = False
            try:
                reusable = await self.cycle(pool, user, device)
            finally:
                if reusable:
                    idle_users.append(user)
                else:
                    self.results.users_retired += 1
                busy_devices.discard(device.device_id)

        while time.monotonic() < until:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            online = [d for d in swarm.devices if d.client is not None and d.client.connected]
            device = None
            for _ in range(20):
                candidate = self.rng.choice(online) if online else None
                if candidate is not None and candidate.device_id not in busy_devices:
                    device = candidate
                    break
            if device is None or not idle_users:
                self.results.unlocks_skipped += 1
                continue
            user = idle_users.popleft()
            busy_devices.add(device.device_id)
            self.results.unlocks_started += 1
            task = asyncio.create_task(run_one(user, device))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def telemetry_pacer(self, swarm: Swarm, watch: probes.TelemetryWatch) -> None:
        """Heartbeats at --telemetry-rate from the first connection until `self.telemetry_until` (devices must
        heartbeat or device-svc shows them offline after 60 s); measured in the load window."""
        rate = self.args.telemetry_rate
        if rate <= 0:
            return
        tick = 0.05
        carry = 0.0
        index = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while time.monotonic() < self.telemetry_until:
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            carry += rate * tick
            n, carry = int(carry), carry - int(carry)
            devices = swarm.devices
            for _ in range(n):
                for _attempt in range(len(devices)):
                    device = devices[index % len(devices)]
                    index += 1
                    sent = device.send_heartbeat()
                    if sent is not None:
                        watch.record_sent(device.device_id, sent[0], sent[1])
                        swarm.stats.heartbeats_sent += 1
                        break
                else:
                    swarm.stats.heartbeats_failed += 1

    async def progress(
        self, swarm: Swarm, watch: probes.TelemetryWatch, sampler: probes.ProcessSampler, t0: float
    ) -> None:
        r = self.results
        last_sent = last_seen = last_unlocks = 0
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(2.0)
            now = time.monotonic()
            dt = now - last_t
            point = {
                "t": round(now - t0, 1),
                "connected": swarm.connected,
                "hb_sent_per_s": (swarm.stats.heartbeats_sent - last_sent) / dt,
                "telemetry_seen_per_s": (watch.seen - last_seen) / dt,
                "unlocks_per_s": (len(r.unlock_ms) - last_unlocks) / dt,
                "telemetry_pending": len(watch.pending),
            }
            r.timeline.append(point)
            last_sent, last_seen, last_unlocks, last_t = swarm.stats.heartbeats_sent, watch.seen, len(r.unlock_ms), now
            if not self.args.quiet:
                cpu = {n: s[-1][1] for n, s in sampler.series.items() if s}
                top = ", ".join(f"{n} {c:.0f}%" for n, c in sorted(cpu.items(), key=lambda x: -x[1])[:4])
                say(
                    f"t={point['t']:5.0f}s connected {swarm.connected} | hb {point['hb_sent_per_s']:.0f}/s sent, "
                    f"{point['telemetry_seen_per_s']:.0f}/s on kafka, pending {len(watch.pending)} | unlocks ok "
                    f"{len(r.unlock_ms)} err {sum(r.unlock_errors.values())} "
                    f"p50 {percentile(r.unlock_ms, 50) or 0:.0f} ms | stops {len(r.billing_stop_ms)} | cpu {top}"
                    + self.freshness_progress()
                )

    def freshness_progress(self) -> str:
        samples = self.probe.samples if self.probe is not None else []
        if not samples or samples[-1].oldest_age_s is None:
            return ""
        hours = samples[-1].oldest_age_s * self.args.time_scale / 3600
        return f" | oldest idle-bank position {hours:.1f} h (bank time)"

    async def wait_cabinets_online(self, pool: UserPool, ids: set[str], timeout_s: float) -> int:
        """How many swarm cabinets device-svc shows online (waits until all or timeout)."""
        user = pool.users[0]
        deadline = time.monotonic() + timeout_s
        online = 0
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                r = await pool.http.get(f"{self.device_url}/v1/cabinets", headers=user.auth, timeout=30)
                online = sum(1 for c in r.json()["items"] if c["id"] in ids and c["online"])
            if online >= len(ids) or time.monotonic() > deadline:
                return online
            await asyncio.sleep(3.0)  # listing every cabinet is not free for device-svc

    async def broker_restart(self, swarm: Swarm) -> dict[str, Any]:
        if self.state_dir is None:
            return {"error": "PB_STATE_DIR not set"}
        pid = int((self.state_dir / "mosquitto" / "mosquitto.pid").read_text().strip())
        total = len(swarm.devices)
        say(f"broker restart: SIGTERM mosquitto (pid {pid}), then `stack.py up --stack {self.stack}`")
        start = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while swarm.connected > 0 and time.monotonic() - start < 10:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.05)
        dropped_at = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            self.stack_tool,
            "up",
            "--stack",
            self.stack,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=str(ROOT),
        )
        await proc.wait()
        up_at = time.monotonic()
        curve: list[tuple[float, float]] = []
        while swarm.connected < total and time.monotonic() - up_at < 180:
            curve.append((time.monotonic() - start, swarm.connected))
            await asyncio.sleep(0.5)
        curve.append((time.monotonic() - start, swarm.connected))
        back = time.monotonic()
        return {
            "devices": total,
            "reconnected": swarm.connected,
            "all_back_s_after_broker_up": round(back - up_at, 1) if swarm.connected >= total else None,
            "all_back_s_after_sigterm": round(curve[-1][0], 1) if swarm.connected >= total else None,
            "broker_down_s": round(up_at - dropped_at, 1),
            "curve": curve,
        }

    # ------------------------------------------------------------------ main

    async def run(self) -> dict[str, Any]:
        args = self.args
        if not args.no_provision:
            self.provision()
        host, port, creds = read_fleet(self.fleet_file)
        host = os.environ.get("MQTT_HOST", host)
        port = int(os.environ.get("MQTT_PORT", port))
        chosen = creds[self.skip : self.skip + args.devices]
        if len(chosen) < args.devices:
            self.notes.append(f"fleet file holds {len(chosen)} usable devices (asked {args.devices})")
        bank_creds = freshness.read_fleet_banks(self.fleet_file)[: args.banks] if args.banks > 0 else []
        if len(bank_creds) < args.banks:
            self.notes.append(f"fleet file holds {len(bank_creds)} bank modules (asked {args.banks})")
        schedule = freshness.ReportSchedule(args.bank_report_every_s, args.bank_jitter, args.time_scale)
        if bank_creds and schedule.longest_s > freshness.BUDGET_S:
            self.notes.append(f"the banks' schedule allows gaps of {schedule.longest_s:.0f} s, over the 4 h budget")
        sampler = probes.ProcessSampler(self.state_dir)
        sampler.start()
        floors = {} if args.no_floors else await self.floors()
        watch = probes.TelemetryWatch(self.bootstrap)
        await watch.start()
        swarm = Swarm(host, port, chosen, motor_delay_s=args.motor_ms / 1000, on_eject=self.on_eject)
        banks = freshness.bank_swarm(host, port, bank_creds) if bank_creds else None
        reporter: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        t0 = self.t0 = time.monotonic()
        since_wall = time.time()
        progress = asyncio.create_task(self.progress(swarm, watch, sampler, t0))
        http = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
        try:
            say(f"connecting {len(chosen)} devices at {args.connect_rate:.0f}/s")
            telemetry = asyncio.create_task(self.telemetry_pacer(swarm, watch))
            if banks is not None:
                say(f"connecting {len(bank_creds)} idle bank modules (time scale x{args.time_scale:g})")
                await banks.start(args.connect_rate)
                reporter = asyncio.create_task(freshness.report_pacer(banks, schedule, random.Random(args.seed + 1)))
            await swarm.start(args.connect_rate)
            all_in = await swarm.wait_connected(len(chosen), timeout_s=60 + len(chosen) / args.connect_rate)
            if banks is not None and not await banks.wait_connected(len(bank_creds), timeout_s=30):
                self.notes.append(f"only {banks.connected} of {len(bank_creds)} bank modules connected")
            connect_s = time.monotonic() - t0
            say(f"{swarm.connected}/{len(chosen)} connected after {connect_s:.1f} s")
            if not all_in:
                self.notes.append(f"only {swarm.connected} of {len(chosen)} devices connected")
            pool = UserPool(self.urls, http)
            n_users = args.users or max(2, math.ceil(args.unlock_rate * (args.hold_s + 3) * 1.5))
            u0 = time.monotonic()
            cache = self.state_dir / "bench-users.json" if self.state_dir is not None else None
            reused, new = await pool.create(n_users, balance_fen=100_000, cache=cache)
            say(
                f"{len(pool.users)} of {n_users} users ready ({reused} logged in again, {new} registered) "
                f"in {time.monotonic() - u0:.1f} s"
            )
            if pool.failures:
                self.notes.append(f"{len(pool.failures)} user registrations failed, e.g. {pool.failures[0]}")
                say(f"{len(pool.failures)} user registrations failed, e.g. {pool.failures[0]}")
            if not pool.users and args.unlock_rate > 0:
                self.notes.append("no simulated user could be created: no unlocks in this run")
                args.unlock_rate = 0
            if banks is not None:
                self.probe = freshness.FreshnessProbe(
                    pool.http, self.device_url, pool.admin_auth, {b.bank_id for b in bank_creds}, since_wall, t0
                )
                every = args.freshness_sample_s or min(5.0, max(0.2, freshness.BUDGET_S / args.time_scale / 8))
                watcher = asyncio.create_task(self.probe.watch(every))
            ids = {d.device_id for d in chosen}
            online = await self.wait_cabinets_online(pool, ids, timeout_s=120) if args.unlock_rate > 0 else -1
            ready_s = time.monotonic() - t0
            say(f"device-svc shows {online}/{len(ids)} swarm cabinets online after {ready_s:.1f} s")
            load_start = time.monotonic()
            until = load_start + args.duration
            cycles: set[asyncio.Task[Any]] = set()
            hb_before = swarm.stats.heartbeats_sent
            self.telemetry_until = until
            await self.unlock_pacer(pool, swarm, until, cycles)
            await telemetry
            load_end = time.monotonic()
            devices_connected = swarm.connected
            if self.probe is not None:
                await freshness.cancel(watcher)
                await self.probe.sample()  # the final reading, banks still reporting
            await freshness.cancel(reporter)
            hb_sent = swarm.stats.heartbeats_sent - hb_before
            say(f"load done; waiting for {len(cycles)} rentals in flight and the telemetry feed")
            if cycles:
                await asyncio.wait(cycles, timeout=60)
            drain_start = time.monotonic()
            await watch.drain(args.drain_s, args.drain_max_s)
            drain_s = time.monotonic() - drain_start
            restart = await self.broker_restart(swarm) if args.broker_restart else None
        finally:
            progress.cancel()
            await freshness.cancel(watcher)
            await freshness.cancel(reporter)
            if banks is not None:
                await banks.stop()
            await swarm.stop()
            await watch.stop()
            await sampler.stop()
            await http.aclose()
        return self.finish(
            floors=floors,
            watch=watch,
            swarm=swarm,
            sampler=sampler,
            load=(load_start - t0, load_end - t0),
            devices_connected=devices_connected,
            hb_sent=hb_sent,
            drain_s=drain_s,
            online=online,
            connect_s=connect_s,
            restart=restart,
            banks=banks,
        )

    def finish(
        self,
        *,
        floors: dict[str, Any],
        watch: probes.TelemetryWatch,
        swarm: Swarm,
        sampler: probes.ProcessSampler,
        load: tuple[float, float],
        devices_connected: int,
        hb_sent: int,
        drain_s: float,
        online: int,
        connect_s: float,
        restart: dict[str, Any] | None,
        banks: Swarm | None = None,
    ) -> dict[str, Any]:
        r = self.results
        duration = load[1] - load[0]
        seen_in_load = sum(1 for t in watch.seen_times if self.t0 + load[0] <= t <= self.t0 + load[1])
        unlock = summarize(r.unlock_ms)
        eject = summarize(r.eject_seen_ms)
        stop = summarize(r.billing_stop_ms)
        lag = summarize(watch.lags_ms)

        def floor(name: str, key: str) -> float | None:
            v = floors.get(name, {}).get(key)
            return float(v) if isinstance(v, int | float) else None

        mqtt_p50, kafka_p50 = floor("mqtt_round_trip_ms", "p50"), floor("kafka_round_trip_ms", "p50")
        sub_rate = floor("aiomqtt_subscriber", "msgs_per_s")
        telemetry_rate = round(seen_in_load / duration, 1) if duration > 0 else 0.0
        summary: dict[str, Any] = {
            "devices_target": len(swarm.devices),
            "devices_connected": devices_connected,
            "devices_online_in_device_svc": online,
            "connect_all_s": round(connect_s, 1),
            "unlocks_ok": len(r.unlock_ms),
            "unlock_errors": sum(r.unlock_errors.values()),
            "unlocks_skipped_no_idle_user_or_cabinet": r.unlocks_skipped,
            "users_retired_after_errors": r.users_retired,
            "unlock_rate_achieved_per_s": round(len(r.unlock_ms) / duration, 2) if duration else 0,
            "unlock_p50_ms": unlock["p50"],
            "unlock_p99_ms": unlock["p99"],
            "unlock_eject_seen_p50_ms": eject["p50"],
            "unlock_eject_seen_p99_ms": eject["p99"],
            "billing_stop_p50_ms": stop["p50"],
            "billing_stop_p99_ms": stop["p99"],
            "billing_stop_errors": sum(r.stop_errors.values()),
            "telemetry_sent": watch.sent,
            "telemetry_sent_per_s": round(hb_sent / duration, 1) if duration else 0,
            "telemetry_msgs_per_s": telemetry_rate,
            "telemetry_lost": watch.sent - watch.seen,  # unseen when the wait ended: lost or later than that
            "telemetry_drain_s": round(drain_s, 1),
            "telemetry_lag_p50_ms": lag["p50"],
            "telemetry_lag_p99_ms": lag["p99"],
            "floor_mqtt_rtt_p50_ms": mqtt_p50,
            "floor_kafka_rtt_p50_ms": kafka_p50,
            "floor_mqtt_subscriber_msgs_per_s": floor("mqtt_subscriber", "msgs_per_s"),
            "floor_aiomqtt_subscriber_msgs_per_s": sub_rate,
            "ratio_unlock_p50_to_mqtt_rtt": ratio(unlock["p50"], mqtt_p50),
            "ratio_unlock_p50_to_kafka_rtt": ratio(unlock["p50"], kafka_p50),
            "ratio_billing_stop_p50_to_kafka_rtt": ratio(stop["p50"], kafka_p50),
            "ratio_telemetry_lag_p50_to_kafka_rtt": ratio(lag["p50"], kafka_p50),
            "ratio_telemetry_rate_to_subscriber_floor": (
                round(telemetry_rate / sub_rate, 4) if sub_rate and telemetry_rate else None
            ),
        }
        if restart is not None:
            summary["broker_restart_all_back_s"] = restart.get("all_back_s_after_sigterm")
        if "provision" in self.details:
            summary["provision_s"] = self.details["provision"]["seconds"]
        emulated = freshness.swarm_banks(banks) if banks is not None else []
        samples = self.probe.samples if self.probe is not None else []
        scale = self.args.time_scale
        summary.update(
            freshness.freshness_summary(
                samples,
                banks=len(emulated),
                time_scale=scale,
                window=(load[0], math.inf),
                longest_gap_s=max((b.longest_gap_s for b in emulated), default=None) if emulated else None,
            )
        )
        if self.probe is not None:
            self.details["freshness"] = {
                "schedule": dataclasses.asdict(
                    freshness.ReportSchedule(self.args.bank_report_every_s, self.args.bank_jitter, scale)
                ),
                "reports_sent": sum(b.reports_sent for b in emulated),
                "bank_connects": banks.stats.connects if banks is not None else 0,
                "probe_request_ms": summarize(self.probe.request_ms),
                "probe_errors": self.probe.errors,
                "timeline": [
                    {"t": round(x.t, 2), "idle": x.idle, "unknown": x.unknown, "oldest_real_s": x.oldest_age_s}
                    for x in samples
                ],
            }
            if self.probe.errors:
                self.notes.append(f"{len(self.probe.errors)} freshness readings failed, e.g. {self.probe.errors[0]}")
        procs = sampler.summary(since=load[0])
        self.details.update(
            floors=floors,
            unlock=unlock,
            unlock_eject_seen=eject,
            billing_stop=stop,
            billing_stop_parts={k: summarize(v) for k, v in r.billing_parts_ms.items()},
            unlock_errors=dict(r.unlock_errors),
            billing_stop_errors=dict(r.stop_errors),
            telemetry={"sent": watch.sent, "seen": watch.seen, "other_events": watch.foreign, "lag": lag},
            swarm=dataclasses.asdict(swarm.stats),
            processes=procs,
            timeline=r.timeline,
            broker_restart=restart,
            notes=self.notes,
        )
        charts = {
            "latency": histogram_svg(
                "Latency distributions",
                {
                    "unlock (HTTP)": r.unlock_ms,
                    "eject seen by device": r.eject_seen_ms,
                    "billing stop": r.billing_stop_ms,
                    "telemetry lag": watch.lags_ms[:: max(1, len(watch.lags_ms) // 20000)],
                },
            ),
            "throughput": line_svg(
                "Throughput over time",
                {
                    "heartbeats sent/s": [(p["t"], p["hb_sent_per_s"]) for p in r.timeline],
                    "telemetry on Kafka/s": [(p["t"], p["telemetry_seen_per_s"]) for p in r.timeline],
                    "unlocks/s x100": [(p["t"], p["unlocks_per_s"] * 100) for p in r.timeline],
                },
                "seconds since start",
                "per second",
            ),
            "cpu": line_svg(
                "CPU per process (% of one core)",
                {n: [(t, c) for t, c, _ in s[1:]] for n, s in sampler.series.items()},
                "seconds since start",
                "% CPU",
            ),
        }
        if samples:
            budget_h = freshness.BUDGET_S / 3600
            charts["freshness"] = line_svg(
                f"Oldest idle-bank position age (bank time, x{scale:g})",
                {
                    "oldest age, h": [
                        (x.t, x.oldest_age_s * scale / 3600) for x in samples if x.oldest_age_s is not None
                    ],
                    "budget (4 h)": [(samples[0].t, budget_h), (samples[-1].t, budget_h)],
                },
                "seconds since start",
                "hours (bank time)",
            )
        if restart is not None:
            charts["reconnect"] = line_svg(
                "Devices connected after the broker restart",
                {"connected": [(t, c) for t, c in restart["curve"]]},
                "seconds since SIGTERM",
                "devices",
            )
        page = write_report(self.args.out, summary, self.details, charts)
        say(f"report: {page} and {self.args.out / 'summary.json'}")
        return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.devices < 1 or args.unlock_rate < 0 or args.duration <= 0:
        raise SystemExit("--devices and --duration must be positive, --unlock-rate not negative")
    if args.banks < 0 or args.time_scale <= 0 or args.bank_report_every_s <= 0 or not 0 <= args.bank_jitter < 1:
        raise SystemExit(
            "--banks not negative, --time-scale and --bank-report-every-s positive, --bank-jitter in [0, 1)"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # one socket per device
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.devices + 100 > hard:
        say(f"warning: {args.devices} devices need more file descriptors than the limit {hard}")
    summary = asyncio.run(Bench(args).run())
    for key in (
        "devices_connected",
        "unlock_p50_ms",
        "unlock_p99_ms",
        "unlock_errors",
        "billing_stop_p99_ms",
        "telemetry_msgs_per_s",
        "telemetry_lost",
        "telemetry_lag_p99_ms",
        *(("freshness_oldest_position_s", "freshness_stale_banks") if args.banks > 0 else ()),
    ):
        print(f"{key}: {summary.get(key)}")
    return 0
