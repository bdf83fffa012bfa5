"""The swarm benchmark: many cabinets (own MQTT connection and credentials each) sending telemetry while
simulated users borrow and return through the public HTTP APIs; everything measured from the outside.

    python -m device_emulator.bench --devices 100 --telemetry-rate 50 --unlock-rate 5 --duration 30 \
        [--banks 50 --time-scale 3600]

With --banks N, N idle banks with their own module (own MQTT connection and credentials each) report their
position on a schedule compressed --time-scale times, and the oldest stored position among them is read from
device-svc's ops API (location freshness, 7.2: at most 4 h; see device_emulator.bench.freshness).

The runs issue 9 names are presets (`--preset overload|rental|telemetry|city|sustained|storm|rest`; flags given
as well override the preset's values). Before the load: users ready (kept with their refresh tokens in
$PB_STATE_DIR/bench-users.json), swarm connected and shown online, an idle window (swarm silent) and a
telemetry-only window; the platform's CPU in each, read from /proc, gives idle_cpu_pct_of_core,
cpu_ms_per_report and cpu_ms_per_rental (device_emulator.bench.cpu explains what is counted and how).

Reads the stack environment (`deploy/local/stack.py exec --stack run -- ...` sets it): *_SVC_URL,
MQTT_HOST/PORT/USERNAME/PASSWORD, KAFKA_BOOTSTRAP, PB_FLEET_FILE, PB_STATE_DIR, PB_STACK, PB_STACK_TOOL.
Writes <out>/summary.json, details.json, index.md and SVG charts.

The run loop and its pacers live here; the command line and presets in `presets`, provisioning in `provision`,
the connect storm in `storm`, the summary of what was measured in `summary` (rendered by `report`).
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
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from contracts.mqtt import Eject
from contracts.vendors.volinks import PROTOCOL as VOLINKS
from device_emulator.bench import cpu, freshness, probes, storm, summary
from device_emulator.bench.presets import ROOT, parse_args
from device_emulator.bench.provision import provision_for_bench
from device_emulator.bench.report import percentile, say
from device_emulator.bench.summary import STORM_KEYS, Attempt, Results
from device_emulator.bench.swarm import DeviceCredentials, Swarm, SwarmDevice, read_fleet
from device_emulator.bench.users import ApiError, BenchUser, Urls, UserPool
from device_emulator.bench.volinks_swarm import VolinksSwarmDevice
from device_emulator.tls import context_from_env
from kit.httpclient import KEEPALIVE_EXPIRY_S


def swarm_device(creds: DeviceCredentials, swarm: Swarm) -> SwarmDevice:
    """A swarm cabinet of the fleet entry's maker."""
    return VolinksSwarmDevice(creds, swarm) if creds.protocol == VOLINKS else SwarmDevice(creds, swarm)


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
        # correlation id -> (cabinet, bank, slot) of each eject the swarm received
        self.ejected: dict[str, tuple[str, str | None, int | None]] = {}
        self.storm_results = Results()
        self.telemetry_paused = False
        self.platform = cpu.platform_processes(self.state_dir, env)
        self.last_rental: tuple[BenchUser, str] | None = None  # for measuring what a poll costs
        self.t0 = time.monotonic()
        self.telemetry_until = math.inf
        self.probe: freshness.FreshnessProbe | None = None
        self.idle_users: collections.deque[BenchUser] | None = None  # shared by the load's and the storm's pacer
        self.cpu_windows: dict[str, cpu.Window | None] = {}
        self.cpu_group_pct: dict[str, dict[str, float]] = {}
        self.users_file: tuple[UserPool, Path | None] | None = None
        self.details: dict[str, Any] = {"params": {k: str(v) for k, v in vars(args).items()}}

    # ------------------------------------------------------------------ phases

    async def floors(self) -> dict[str, Any]:
        host, port = os.environ.get("MQTT_HOST", "127.0.0.1"), int(os.environ.get("MQTT_PORT", "1883"))
        tls = context_from_env()
        out: dict[str, Any] = {}
        k = 10 if self.args.smoke else 1
        user, pw = self.mqtt_user, self.mqtt_password
        for name, coro in (
            ("mqtt_round_trip_ms", probes.mqtt_round_trip(host, port, user, pw, samples=200 // k, tls=tls)),
            ("kafka_round_trip_ms", probes.kafka_round_trip(self.bootstrap, 50 // k)),
            ("kafka_round_trip_default_fetch_wait_ms", probes.kafka_round_trip(self.bootstrap, 20 // k, 500)),
            ("mqtt_subscriber", probes.mqtt_subscriber_rate(host, port, user, pw, count=20_000 // k, tls=tls)),
            ("aiomqtt_subscriber", probes.aiomqtt_subscriber_rate(host, port, user, pw, count=20_000 // k, tls=tls)),
        ):
            try:
                out[name] = await coro
            except Exception as exc:  # a floor that cannot be measured is reported, not fatal
                out[name] = {"error": repr(exc)}
            say(f"floor {name}: {out[name]}")
        return out

    def on_eject(self, device_id: str, cmd: Eject, at: float) -> None:
        self.eject_seen[device_id] = at
        if cmd.correlation_id is not None:
            self.ejected[cmd.correlation_id] = (device_id, cmd.bank_id, cmd.slot)

    def on_expired(self, cmd: Eject) -> None:
        """The cabinet refused an eject that reached it after its deadline: no bank came out for it."""
        if cmd.correlation_id is not None:
            self.ejected.pop(cmd.correlation_id, None)

    async def cycle(self, pool: UserPool, user: BenchUser, device: SwarmDevice, r: Results) -> bool:
        """Borrow, hold, return, watch billing stop. True when the user is free for another rental (after a
        failed unlock the platform may still complete it later: such a user is retired)."""
        self.eject_seen.pop(device.device_id, None)
        correlation_id = uuid.uuid4().hex
        start = time.monotonic()
        try:
            borrowed = await pool.borrow(user, device.device_id, correlation_id)
        except ApiError as exc:
            r.unlock_errors[exc.code] += 1
            r.attempts.append(Attempt(start, (time.monotonic() - start) * 1000, exc.code, correlation_id))
            if exc.code in ("busy", "cabinet_offline"):
                return True  # shed, or refused by device-svc before any eject was sent: the user can go on
            if exc.status >= 500:
                recovered = await self.hand_back(pool, user, device, correlation_id)
                r.handed_back += recovered
                return recovered
            return exc.code != "active_rental_exists"
        except httpx.HTTPError as exc:
            r.unlock_errors[type(exc).__name__] += 1
            r.attempts.append(Attempt(start, (time.monotonic() - start) * 1000, type(exc).__name__, correlation_id))
            return False
        done = time.monotonic()
        r.unlock_ms.append((done - start) * 1000)
        r.attempts.append(Attempt(start, (done - start) * 1000, None, correlation_id))
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
        r.cycles_by_protocol[device.creds.protocol] += 1
        self.last_rental = (user, borrowed.rental_id)
        return True

    async def hand_back(self, pool: UserPool, user: BenchUser, device: SwarmDevice, correlation_id: str) -> bool:
        """After an error answer: when the cabinet did receive this request's eject, the bank is out and the
        platform may still open the rental (a late eject result). As a user would, hand the bank back and wait
        until the user has no rental open; True when the user can go on (else the user is retired)."""
        deadline = time.monotonic() + 10
        while correlation_id not in self.ejected and time.monotonic() < deadline:  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.2)
        ejected = self.ejected.get(correlation_id)
        if ejected is None or ejected[1] is None or ejected[2] is None:
            return False
        try:
            await device.return_bank(ejected[1], ejected[2])
            return await pool.wait_no_open_rental(user, timeout_s=30)
        except (ApiError, httpx.HTTPError, TimeoutError):
            return False

    async def unlock_pacer(
        self,
        pool: UserPool,
        swarm: Swarm,
        until: float,
        tasks: set[asyncio.Task[Any]],
        results: Results,
        *,
        rate: float | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Start a borrow cycle every 1/rate s (default --unlock-rate) until `until` or `stop` is set."""
        rate = self.args.unlock_rate if rate is None else rate
        if rate <= 0:
            return
        idle_users = collections.deque(self.idle_users if self.idle_users is not None else pool.users)
        self.idle_users = idle_users
        busy_devices: set[str] = set()
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()

        async def run_one(user: BenchUser, device: SwarmDevice) -> None:
            reusable = False
            try:
                reusable = await self.cycle(pool, user, device, results)
            finally:
                if reusable:
                    idle_users.append(user)
                else:
                    results.users_retired += 1
                busy_devices.discard(device.device_id)

        while time.monotonic() < until and (stop is None or not stop.is_set()):
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
                results.unlocks_skipped += 1
                continue
            user = idle_users.popleft()
            busy_devices.add(device.device_id)
            results.unlocks_started += 1
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
            if self.telemetry_paused:  # the idle window: connected and silent
                carry = 0.0
                continue
            carry += rate * tick
            n, carry = int(carry), carry - int(carry)
            devices = swarm.devices
            for _ in range(n):
                for _attempt in range(len(devices)):
                    device = devices[index % len(devices)]
                    index += 1
                    sent = device.send_heartbeat()
                    if sent is not None:
                        if device.watched:
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

    async def measure(self, name: str, seconds: float, watch: probes.TelemetryWatch) -> cpu.Window:
        """The platform's CPU over the next `seconds`, with the telemetry reports seen on Kafka meanwhile."""
        before, start = cpu.platform_cpu_s(self.platform), time.monotonic()
        await asyncio.sleep(seconds)
        return self.close_window(name, before, start, reports=watch.seen_between(start, time.monotonic()))

    def close_window(self, name: str, before: dict[str, float], start: float, **counts: int) -> cpu.Window:
        """The window from `start` (platform CPU `before`) until now; its share per group kept for the report."""
        after, end = cpu.platform_cpu_s(self.platform), time.monotonic()
        self.cpu_group_pct[name] = cpu.per_group_pct(before, after, end - start)
        return cpu.window(before, after, end - start, **counts)

    async def measure_polls(self, pool: UserPool, in_load: collections.Counter[str]) -> cpu.Window:
        """What the benchmark's own polling costs the platform: the requests `wait_stopped` made in the load
        (rental, wallet entries, inbox), issued again on their own after it, in the same mix (60-600 of them)."""
        assert self.last_rental is not None
        user, rental_id = self.last_rental
        total = sum(in_load.values())
        scale = min(600, max(60, total)) / total
        kinds = [kind for kind, n in in_load.items() for _ in range(max(1, round(n * scale)))]
        await asyncio.sleep(2.0)  # let the last rentals' events settle (analytics, notify)
        say(f"measuring the cost of the benchmark's polls: {len(kinds)} requests")
        limit = asyncio.Semaphore(4)

        async def one(kind: str) -> None:
            async with limit:
                if kind == "rental":
                    await pool.rental(user, rental_id)
                elif kind == "current":
                    await pool.has_open_rental(user)
                elif kind == "wallet_entries":
                    await pool.last_debit_id(user)
                else:
                    await pool.last_ended_message_at(user)

        await pool.fresh(user)
        before, start = cpu.platform_cpu_s(self.platform), time.monotonic()
        await asyncio.gather(*(one(kind) for kind in kinds))
        return self.close_window("polls", before, start, polls=len(kinds))

    # ------------------------------------------------------------------ main

    async def run(self) -> dict[str, Any]:
        args = self.args
        if not args.no_provision:
            self.details["provision"] = provision_for_bench(
                args, stack=self.stack, stack_tool=self.stack_tool, fleet_file=self.fleet_file, skip=self.skip
            )
        host, port, creds = read_fleet(self.fleet_file)
        host = os.environ.get("MQTT_HOST", host)
        port = int(os.environ.get("MQTT_PORT", port))
        native = [c for c in creds if c.protocol != VOLINKS]
        chosen = native[self.skip : self.skip + args.devices]
        if len(chosen) < args.devices:
            self.notes.append(f"fleet file holds {len(chosen)} usable devices (asked {args.devices})")
        vendor = [c for c in creds if c.protocol == VOLINKS][: args.volinks]
        if len(vendor) < args.volinks:
            self.notes.append(f"fleet file holds {len(vendor)} volinks cabinets (asked {args.volinks})")
        chosen += vendor
        bank_creds = freshness.read_fleet_banks(self.fleet_file)[: args.banks] if args.banks > 0 else []
        if len(bank_creds) < args.banks:
            self.notes.append(f"fleet file holds {len(bank_creds)} bank modules (asked {args.banks})")
        schedule = freshness.ReportSchedule(args.bank_report_every_s, args.bank_jitter, args.time_scale)
        if bank_creds and schedule.longest_s > freshness.BUDGET_S:
            self.notes.append(f"the banks' schedule allows gaps of {schedule.longest_s:.0f} s, over the 4 h budget")
        sampler = probes.ProcessSampler(self.platform)
        sampler.start()
        floors = {} if args.no_floors else await self.floors()
        watch = probes.TelemetryWatch(self.bootstrap)
        await watch.start()
        tls = context_from_env()  # the stack's CA (MQTT_CA_FILE): every device verifies the broker
        swarm = Swarm(
            host,
            port,
            chosen,
            motor_delay_s=args.motor_ms / 1000,
            on_eject=self.on_eject,
            tls=tls,
            device_factory=swarm_device,
        )
        swarm.on_expired = self.on_expired
        banks = freshness.bank_swarm(host, port, bank_creds, tls=tls) if bank_creds else None
        reporter: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        t0 = self.t0 = time.monotonic()
        since_wall = time.time()
        progress = asyncio.create_task(self.progress(swarm, watch, sampler, t0))
        http = httpx.AsyncClient(
            timeout=30.0,
            limits=httpx.Limits(
                max_connections=256, max_keepalive_connections=256, keepalive_expiry=KEEPALIVE_EXPIRY_S
            ),
        )
        try:
            # users first: a silent cabinet is shown offline after 60 s, and the first registrations take a while
            pool = UserPool(self.urls, http)
            n_users = args.users or max(2, math.ceil(args.unlock_rate * (args.hold_s + 3) * 1.5))
            u0 = time.monotonic()
            cache = self.state_dir / "bench-users.json" if self.state_dir is not None else None
            prepared = await pool.create(n_users, balance_fen=100_000, cache=cache)
            self.users_file = (pool, cache)
            self.details["users"] = {
                "wanted": n_users,
                "ready": len(pool.users),
                "prepare_s": round(time.monotonic() - u0, 1),
                "file": str(cache),
                **dataclasses.asdict(prepared),
            }
            say(
                f"{len(pool.users)} of {n_users} users ready ({prepared.refreshed} by refresh token, "
                f"{prepared.logged_in} by password, {prepared.registered} registered) in {time.monotonic() - u0:.1f} s"
            )
            if pool.failures:
                self.notes.append(f"{len(pool.failures)} user registrations failed, e.g. {pool.failures[0]}")
                say(f"{len(pool.failures)} user registrations failed, e.g. {pool.failures[0]}")
            if not pool.users and args.unlock_rate > 0:
                self.notes.append("no simulated user could be created: no unlocks in this run")
                args.unlock_rate = 0
            say(f"connecting {len(chosen)} devices at {args.connect_rate:.0f}/s")
            connect_start = time.monotonic()
            telemetry = asyncio.create_task(self.telemetry_pacer(swarm, watch))
            if banks is not None:
                say(f"connecting {len(bank_creds)} idle bank modules (time scale x{args.time_scale:g})")
                await banks.start(args.connect_rate)
                reporter = asyncio.create_task(freshness.report_pacer(banks, schedule, random.Random(args.seed + 1)))
            await swarm.start(args.connect_rate)
            all_in = await swarm.wait_connected(len(chosen), timeout_s=60 + len(chosen) / args.connect_rate)
            if banks is not None and not await banks.wait_connected(len(bank_creds), timeout_s=30):
                self.notes.append(f"only {banks.connected} of {len(bank_creds)} bank modules connected")
            connect_s = time.monotonic() - connect_start
            say(f"{swarm.connected}/{len(chosen)} connected after {connect_s:.1f} s")
            if not all_in:
                self.notes.append(f"only {swarm.connected} of {len(chosen)} devices connected")
            if banks is not None:
                self.probe = freshness.FreshnessProbe(
                    pool.http, self.device_url, pool.admin_auth, {b.bank_id for b in bank_creds}, since_wall, t0
                )
                every = args.freshness_sample_s or min(5.0, max(0.2, freshness.BUDGET_S / args.time_scale / 8))
                watcher = asyncio.create_task(self.probe.watch(every))
            ids = {d.device_id for d in chosen}
            online = await storm.wait_cabinets_online(self, pool, ids, timeout_s=120) if pool.users else -1
            ready_s = time.monotonic() - connect_start
            say(f"device-svc shows {online}/{len(ids)} swarm cabinets online after {ready_s:.1f} s")

            # the platform at rest: swarm connected and silent, once the telemetry sent so far is through
            self.telemetry_paused = True
            await watch.drain(args.drain_s, args.drain_max_s)
            if args.settle_s > 0:
                say(f"settling {args.settle_s:g} s: consumers go back to their rest fetch")
                await asyncio.sleep(args.settle_s)
            say(f"idle window: {args.idle_s:g} s with the swarm connected and silent")
            watch.pause()
            idle = await self.measure("idle", args.idle_s, watch)
            watch.resume()
            self.telemetry_paused = False
            telemetry_only = None
            if args.telemetry_rate > 0 and args.unlock_rate > 0 and args.duration > 0 and args.telemetry_window_s > 0:
                say(f"telemetry-only window: {args.telemetry_window_s:g} s at {args.telemetry_rate:g} reports/s")
                telemetry_only = await self.measure("telemetry_only", args.telemetry_window_s, watch)

            load_start = time.monotonic()
            until = load_start + args.duration
            cycles: set[asyncio.Task[Any]] = set()
            hb_before = swarm.stats.heartbeats_sent
            polls_before = collections.Counter(pool.polls)
            cpu_before = cpu.platform_cpu_s(self.platform)
            self.telemetry_until = until
            await self.unlock_pacer(pool, swarm, until, cycles, self.results)
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
            mixed = self.close_window(
                "mixed",
                cpu_before,
                load_start,
                reports=watch.seen_between(load_start, time.monotonic()),
                rentals=len(self.results.billing_stop_ms),
                polls=(pool.polls - polls_before).total(),
            )
            self.cpu_windows = {"idle": idle, "telemetry_only": telemetry_only, "mixed": mixed}
            drain_start = time.monotonic()
            await watch.drain(args.drain_s, args.drain_max_s)
            drain_s = time.monotonic() - drain_start
            if mixed.polls and self.last_rental is not None:
                self.cpu_windows["polls"] = await self.measure_polls(pool, pool.polls - polls_before)
            restart = await storm.broker_restart(self, swarm, pool) if args.broker_restart else None
        finally:
            progress.cancel()
            await freshness.cancel(watcher)
            await freshness.cancel(reporter)
            if banks is not None:
                await banks.stop()
            await swarm.stop()
            await watch.stop()
            await sampler.stop()
            if self.users_file is not None:
                self.users_file[0].save(self.users_file[1])  # the newest refresh tokens, for the next run
            await http.aclose()
        return summary.finish(
            self,
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


OWN_FILES = 1024  # the benchmark's descriptors besides one socket per device: HTTP pool, Kafka, probes, files


def raise_open_files(need: int) -> int:
    """Make room for `need` open files (one socket per device): the soft limit up to the hard one, and both to
    `need` when the hard limit is lower and we may raise it (root with CAP_SYS_RESOURCE, up to fs.nr_open; a
    container may withhold the capability). The soft limit in force is returned."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.devices < 1 or args.unlock_rate < 0 or args.duration < 0 or args.idle_s <= 0:
        raise SystemExit("--devices and --idle-s must be positive, --unlock-rate and --duration not negative")
    if args.banks < 0 or args.time_scale <= 0 or args.bank_report_every_s <= 0 or not 0 <= args.bank_jitter < 1:
        raise SystemExit(
            "--banks not negative, --time-scale and --bank-report-every-s positive, --bank-jitter in [0, 1)"
        )
    need = args.devices + args.banks + OWN_FILES
    limit = raise_open_files(need)
    if need > limit:
        say(f"warning: {args.devices} devices need {need} file descriptors, over the limit {limit}")
    results = asyncio.run(Bench(args).run())
    for key in (
        "devices_connected",
        "unlock_p50_ms",
        "unlock_p99_ms",
        "unlock_errors",
        "billing_stop_p99_ms",
        "telemetry_msgs_per_s",
        "telemetry_lost",
        "telemetry_lag_p99_ms",
        "cpu_ms_per_rental",
        "cpu_ms_per_report",
        "idle_cpu_pct_of_core",
        "provision_s",
        "unlock_error_but_ejected",
        "unlock_errors_by_code",
        *(STORM_KEYS if args.broker_restart else ()),
        *(("freshness_oldest_position_s", "freshness_stale_banks") if args.banks > 0 else ()),
    ):
        print(f"{key}: {results.get(key)}")
    return 0
