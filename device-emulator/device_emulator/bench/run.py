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
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from contracts.mqtt import Eject
from contracts.vendors.volinks import PROTOCOL as VOLINKS
from device_emulator.bench import cpu, freshness, probes
from device_emulator.bench.report import histogram_svg, line_svg, percentile, ratio, summarize, write_report
from device_emulator.bench.swarm import DeviceCredentials, Swarm, SwarmDevice, read_fleet
from device_emulator.bench.users import ApiError, BenchUser, Urls, UserPool
from device_emulator.bench.volinks_swarm import VolinksSwarmDevice
from device_emulator.tls import context_from_env
from kit.httpclient import KEEPALIVE_EXPIRY_S

ROOT = Path(__file__).resolve().parents[3]
STORM_ANSWER_BUDGET_MS = 5000.0  # an unlock during a connect storm is answered within 5 s, with a reason if need be


# The runs issue 9 names, one command each (`make bench PRESET=overload`); flags given with --preset win.
PRESETS: dict[str, dict[str, Any]] = {
    # the overload that made unlocks answer 504 while their bank was ejected
    "overload": {"devices": 300, "telemetry_rate": 200.0, "unlock_rate": 15.0, "duration": 30.0},
    # CPU per rental, undiluted: few devices, no telemetry (cpu_ms_per_rental measured directly)
    "rental": {"devices": 20, "telemetry_rate": 0.0, "unlock_rate": 5.0, "duration": 30.0},
    # telemetry capacity: 5,000 reports/s offered by 1,000 devices, no unlocks
    "telemetry": {"devices": 1000, "telemetry_rate": 5000.0, "unlock_rate": 0.0, "duration": 30.0},
    # a 10,000-cabinet city at its heartbeat rate (one per 20 s), a few rentals, then a connect storm
    "city": {
        "devices": 10_000,
        "telemetry_rate": 500.0,
        "unlock_rate": 2.0,
        "duration": 20.0,
        "broker_restart": True,
        "connect_rate": 1000.0,
    },
    # the 10-minute sustained target: 50 unlocks/s with 10,000 devices and 2,000 reports/s
    "sustained": {
        "devices": 10_000,
        "telemetry_rate": 2000.0,
        "unlock_rate": 50.0,
        "duration": 600.0,
        "connect_rate": 1000.0,
    },
    # 20,000 devices connected at once, then a broker restart (the fleet heartbeats every 20 s)
    "storm": {
        "devices": 20_000,
        "telemetry_rate": 1000.0,
        "unlock_rate": 2.0,
        "duration": 20.0,
        "broker_restart": True,
        "connect_rate": 1000.0,
    },
    # the mesh at rest: a silent fleet connected, 30 s idle, no load window
    "rest": {"devices": 100, "telemetry_rate": 0.0, "unlock_rate": 0.0, "duration": 0.0, "idle_s": 30.0},
}


def _preset_help() -> str:
    def flag(key: str, value: Any) -> str:
        name = "--" + key.replace("_", "-")
        if value is True:
            return name
        return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"

    return "; ".join(f"{name}: {' '.join(flag(k, v) for k, v in values.items())}" for name, values in PRESETS.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m device_emulator.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named run of issue 9 (flags given as well override its values): " + _preset_help(),
    )
    p.add_argument("--devices", type=int, default=100, help="swarm cabinets (each its own MQTT connection)")
    p.add_argument("--slots", type=int, default=8, help="slots per cabinet when provisioning")
    p.add_argument(
        "--volinks", type=int, default=0, help="also N cabinets speaking the volinks protocol (a vendor mix)"
    )
    p.add_argument("--telemetry-rate", type=float, default=50.0, help="heartbeats per second, whole swarm")
    p.add_argument("--unlock-rate", type=float, default=5.0, help="borrows started per second (0: none)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (0: idle window only)")
    p.add_argument(
        "--idle-s",
        type=float,
        default=None,
        help="quiet seconds before the load, swarm connected and silent: the platform's CPU at rest (10; 2 --smoke)",
    )
    p.add_argument(
        "--telemetry-window-s",
        type=float,
        default=None,
        help="seconds of telemetry only before the mixed load, for CPU per report (10; 2 with --smoke)",
    )
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
        help="seed through `stack.py seed` (device-svc's demo seed, at most 9,999 cabinets), not the admin API",
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
    p.add_argument("--storm-timeout-s", type=float, default=180.0, help="max seconds the storm is watched")
    p.add_argument(
        "--settle-s",
        type=float,
        default=None,
        help="seconds of silence before the idle window, so that every consumer has gone back to its rest fetch "
        "(default: the stack's KAFKA_FETCH_FLOW_S + 2, i.e. 12 s; 0 with --smoke)",
    )
    p.add_argument("--drain-s", type=float, default=10.0, help="max quiet seconds waiting for telemetry")
    p.add_argument("--drain-max-s", type=float, default=60.0, help="max seconds waiting for telemetry in all")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    known, _ = p.parse_known_args(argv)
    if known.preset is not None:
        p.set_defaults(**PRESETS[known.preset])
    args = p.parse_args(argv)
    quiet_window_s = 2.0 if args.smoke else 10.0
    args.idle_s = quiet_window_s if args.idle_s is None else args.idle_s
    args.telemetry_window_s = quiet_window_s if args.telemetry_window_s is None else args.telemetry_window_s
    if args.settle_s is None:
        # A consumer fetches with its short flow wait until KAFKA_FETCH_FLOW_S after the last record it got
        # (kit.kafka.FetchWait): the connect burst's presence events and the users' sign-ins would otherwise
        # leave the first seconds of the idle window at the flow rate (measured: 10.4 % instead of 6-7 %).
        args.settle_s = 0.0 if args.smoke else float(os.environ.get("KAFKA_FETCH_FLOW_S", "10")) + 2.0
    return args


def swarm_device(creds: DeviceCredentials, swarm: Swarm) -> SwarmDevice:
    """A swarm cabinet of the fleet entry's maker."""
    return VolinksSwarmDevice(creds, swarm) if creds.protocol == VOLINKS else SwarmDevice(creds, swarm)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One unlock request: when it started (monotonic), how long the answer took, its error code (None: the
    bank was ejected and the rental is active) and the correlation id it was sent with."""

    started: float
    took_ms: float
    code: str | None
    correlation_id: str


def errors_but_ejected(attempts: Sequence[Attempt], ejected: Mapping[str, object]) -> int:
    """Unlocks answered with an error although the cabinet received the eject sent for that very request
    (`ejected` is keyed by the command's correlation id): the 504-while-ejected class; 0 when the platform is
    right (a cabinet that answered an eject means the bank is out, whatever the user was told)."""
    return sum(1 for a in attempts if a.code is not None and a.correlation_id in ejected)


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
    attempts: list[Attempt] = field(default_factory=list)
    handed_back: int = 0  # error answers whose ejected bank the user handed back (see Bench.hand_back)
    timeline: list[dict[str, float]] = field(default_factory=list)
    # rentals borrowed and returned (billing stopped), per maker of the cabinet (--volinks)
    cycles_by_protocol: collections.Counter[str] = field(default_factory=collections.Counter)


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

    def provision(self) -> None:
        """Provision skip + devices cabinets through device-svc's admin API (device_emulator.bench.provision: bulk
        imports; the emulator uses no device-svc code), or with --real-provisioning through `stack.py seed`
        (device-svc's own demo seed, at most 9,999 cabinets)."""
        total = self.skip + self.args.devices
        seed_args = ["--cabinets", str(total), "--slots", str(self.args.slots), "--seed", str(self.args.seed)]
        if self.args.banks > 0:
            seed_args += ["--bank-modules", str(self.args.banks)]
        if self.args.volinks > 0:
            seed_args += ["--volinks", str(self.args.volinks)]
        env = dict(os.environ)
        if self.args.real_provisioning:  # the bench's modules are the last banks, not the demo cabinets'
            last = ["--bank-modules-last"] if self.args.banks > 0 else []
            cmd = [sys.executable, self.stack_tool, "seed", "--stack", self.stack, "--", *seed_args, *last]
        else:
            cmd = [sys.executable, "-m", "device_emulator.bench.provision", *seed_args]
            cmd += ["--fleet-out", str(self.fleet_file)]
        say(
            f"provisioning {total} cabinets, {self.args.volinks} volinks cabinets, {self.args.banks} bank modules: "
            f"{' '.join(cmd[1:])}"
        )
        start = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
        took = time.monotonic() - start
        self.details["provision"] = {
            "cabinets": total,
            "bank_modules": self.args.banks,
            "seconds": round(took, 2),
            "rc": done.returncode,
            "through": "stack.py seed" if self.args.real_provisioning else "admin API",
            "output": done.stdout.strip()[-300:],
        }
        say(f"provisioned in {took:.1f} s: {done.stdout.strip()[-300:]}")
        if done.returncode != 0:
            raise SystemExit(f"provisioning failed:\n{done.stdout}\n{done.stderr}")

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

    async def cabinets_online(self, pool: UserPool, ids: set[str], seen_after: datetime | None = None) -> int:
        """How many of `ids` device-svc shows online (and, with `seen_after`, heard from since then), from
        its presence summary: one count query, where listing every cabinet each time would load device-svc
        in the very storm being measured. Exact while at most 1,000 cabinets are silent; a lower bound
        before that."""
        params: dict[str, str | int] = {"silent_limit": 1000}
        if seen_after is not None:
            params["heard_since"] = seen_after.isoformat()
        headers = await pool.admin_auth()
        r = await pool.http.get(f"{self.device_url}/v1/ops/presence", params=params, headers=headers, timeout=30)
        r.raise_for_status()
        body = r.json()
        silent = len(ids.intersection(body["silent"]))
        if body["silent_total"] > len(body["silent"]):  # some not listed: assume the worst of them
            silent = max(silent, body["silent_total"] - (body["cabinets"] - len(ids)))
        return len(ids) - silent

    async def wait_cabinets_online(self, pool: UserPool, ids: set[str], timeout_s: float) -> int:
        """How many swarm cabinets device-svc shows online (waits until all or timeout)."""
        deadline = time.monotonic() + timeout_s
        online = 0
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                online = await self.cabinets_online(pool, ids)
            if online >= len(ids) or time.monotonic() > deadline:
                return online
            await asyncio.sleep(3.0)  # listing every cabinet is not free for device-svc

    async def broker_restart(self, swarm: Swarm, pool: UserPool) -> dict[str, Any]:
        """The connect storm: SIGTERM Mosquitto, start it again (`stack.py up`), and time from the SIGTERM until
        every device is connected again, until device-svc shows each swarm cabinet online and heard from since
        the SIGTERM (`storm_online_s`), and until a borrow succeeds again (`storm_rent_again_s`). Borrows go on
        through the storm at --unlock-rate (at least 1/s) on cabinets connected from the swarm's side."""
        if self.state_dir is None:
            return {"error": "PB_STATE_DIR not set"}
        pid = int((self.state_dir / "mosquitto" / "mosquitto.pid").read_text().strip())
        total = len(swarm.devices)
        ids = {d.device_id for d in swarm.devices}
        say(f"broker restart: SIGTERM mosquitto (pid {pid}), then `stack.py up --stack {self.stack}`")
        start = time.monotonic()
        killed_wall = datetime.now(UTC)
        os.kill(pid, signal.SIGTERM)
        stop = asyncio.Event()
        cycles: set[asyncio.Task[Any]] = set()
        rate = max(1.0, self.args.unlock_rate)
        storm_end = start + self.args.storm_timeout_s
        pacer = asyncio.create_task(
            self.unlock_pacer(pool, swarm, storm_end, cycles, self.storm_results, rate=rate, stop=stop)
        )
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
                    online = await self.cabinets_online(pool, ids, seen_after=killed_wall)
                    online_curve.append((time.monotonic() - start, online))
                    if online >= total:
                        online_s = time.monotonic() - start
            if connected_s is not None and online_s is not None and self.rent_again_s(start) is not None:
                break
            await asyncio.sleep(0.5)
        stop.set()
        await pacer
        if cycles:
            await asyncio.wait(cycles, timeout=60)
        storm = self.storm_results
        return {
            "devices": total,
            "reconnected": swarm.connected,
            "all_back_s_after_broker_up": round(connected_s - (up_at - start), 1) if connected_s else None,
            "all_back_s_after_sigterm": round(connected_s, 1) if connected_s is not None else None,
            "online_s_after_sigterm": round(online_s, 1) if online_s is not None else None,
            "rent_again_s_after_sigterm": self.rent_again_s(start),
            "restart_command_s": round(up_at - dropped_at, 1),  # devices dropped until `stack.py up` returned
            "unlocks": len(storm.attempts),
            "unlocks_over_5s": sum(1 for a in storm.attempts if a.took_ms > STORM_ANSWER_BUDGET_MS),
            "unlock_errors_by_code": dict(storm.unlock_errors),
            "unlock_answer_ms": summarize([a.took_ms for a in storm.attempts]),
            "unlock_error_but_ejected": errors_but_ejected(storm.attempts, self.ejected),
            "curve": curve,
            "online_curve": online_curve,
        }

    def rent_again_s(self, since: float) -> float | None:
        """Seconds from `since` until the first storm borrow answered with an active rental."""
        ok = [a.started + a.took_ms / 1000 for a in self.storm_results.attempts if a.code is None]
        return round(min(ok) - since, 1) if ok else None

    # ------------------------------------------------------------------ main

    async def run(self) -> dict[str, Any]:
        args = self.args
        if not args.no_provision:
            self.provision()
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
            online = await self.wait_cabinets_online(pool, ids, timeout_s=120) if pool.users else -1
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
            restart = await self.broker_restart(swarm, pool) if args.broker_restart else None
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

    def cost_and_errors(self) -> dict[str, Any]:
        """The cost figures (device_emulator.bench.cpu), provisioning time, user preparation and the unlock
        errors by code, with those whose cabinet did eject the bank."""
        w = self.cpu_windows
        costs = cpu.attribute(w.get("idle"), w.get("telemetry_only"), w.get("mixed"), w.get("polls"))
        self.details["cpu"] = {
            "counted": {name: pids for name, pids in self.platform.roots.items()},
            "notes": list(self.platform.notes),
            "windows": cpu.describe(w.items()),
            "per_group_pct_of_core": self.cpu_group_pct,
            "figures": costs,
        }
        r = self.results
        provision = self.details.get("provision")
        users = self.details.get("users", {})
        return costs | {
            "provision_s": provision["seconds"] if provision else None,
            "users_prepare_s": users.get("prepare_s"),
            "users_registered": users.get("registered"),
            "unlock_errors_by_code": dict(sorted(r.unlock_errors.items())),
            "unlock_error_but_ejected": errors_but_ejected(r.attempts, self.ejected),
            "unlock_errors_bank_handed_back": r.handed_back,
        }

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
            "rentals_completed_by_protocol": dict(r.cycles_by_protocol),
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
        summary |= self.cost_and_errors()
        if restart is not None:
            summary["broker_restart_all_back_s"] = restart.get("all_back_s_after_sigterm")
            summary |= {
                "storm_connected_s": restart.get("all_back_s_after_sigterm"),
                "storm_online_s": restart.get("online_s_after_sigterm"),
                "storm_rent_again_s": restart.get("rent_again_s_after_sigterm"),
                "storm_unlocks": restart.get("unlocks"),
                "storm_unlocks_over_5s": restart.get("unlocks_over_5s"),
                "storm_unlock_error_but_ejected": restart.get("unlock_error_but_ejected"),
            }
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


STORM_KEYS = ("storm_connected_s", "storm_online_s", "storm_rent_again_s", "storm_unlocks_over_5s")
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
        "cpu_ms_per_rental",
        "cpu_ms_per_report",
        "idle_cpu_pct_of_core",
        "provision_s",
        "unlock_error_but_ejected",
        "unlock_errors_by_code",
        *(
            ("storm_connected_s", "storm_online_s", "storm_rent_again_s", "storm_unlocks_over_5s")
            if args.broker_restart
            else ()
        ),
        *(("freshness_oldest_position_s", "freshness_stale_banks") if args.banks > 0 else ()),
    ):
        print(f"{key}: {summary.get(key)}")
    return 0
