"""`make chaos`: users and devices keep renting while faults are injected on a seeded schedule; invariants are
checked while it runs and at the end; the figures go to reports/chaos/summary.json and index.md (issue 14).

Runs inside `stack.py exec --stack chaos` (its own stack: never `run` or `test`), after the services, the seeded
fleet and the device emulator were started. `python tests/chaos/run.py --help` lists the knobs.

Faults (each kind in turn, in a seeded order): kill -9 of each service's process (device-svc: each of its two
instances), started again as an operator's supervisor would; SIGSTOP/SIGCONT of the Kafka broker and of
Mosquitto; a restart of the broker (empty: tansu keeps nothing; no setup runs, the services create the topics
again), of Mosquitto and of PostgreSQL (only the stack's private cluster; never a system server); on the
devices, through the emulator: lost eject answers, duplicated and delayed up messages, clocks skewed by
±10 minutes and set to 1970. Users borrow, return, top up, pay and get back their deposit and withdraw part of
their balance while they happen.

A borrow answered with an error (5xx, 504 no answer, a connection cut by a kill) may still have ejected the
bank: the eject can land after the answer (billing revives the failed rental, free of charge) or the answer was
lost. A user looks at their rentals in the app, as a real one holding a bank would, and returns every bank of an
active rental; at the end the emulator's cabinets say which banks really are out, and a bank out with no open
rental (or an open rental whose bank never came out) is a violation."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "deploy" / "local")]

from platform_client import PlatformClient, Urls  # noqa: E402
from stacklib.common import KAFKA_PARTITIONS, load_stack, read_meta  # noqa: E402
from stacklib.kafka import start_tansu  # noqa: E402
from stacklib.mosquitto import mosquitto_paths  # noqa: E402
from stacklib.postgres import restart_private_pg  # noqa: E402
from stacklib.procs import read_pid  # noqa: E402

SERVICES = ("user-svc", "device-svc", "device-svc-2", "billing-svc", "asset-credit-svc", "notify-svc", "analytics-svc")
DATABASES = ("USER", "DEVICE", "BILLING", "ASSET", "NOTIFY", "ANALYTICS")
FINAL_RENTAL_STATES = ("settled", "failed")
# A database restarting (restart_postgres) or a connection broken mid-query: checked again at the next tick.
DB_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
DEVICE_FAULTS = (
    "device_lost_ack",
    "device_duplicate",
    "device_delay",
    "device_clock_skew",
    "device_clock_1970",
    "device_late_24h_returns",  # returns stamped 24 h back (a message that arrives a day late)
    "device_repeated_returns",  # every return report sent three times (the emulator's repeat)
)
# What the users' returns carry while a return fault is on (the emulator's ReturnRequest fields).
RETURN_FAULTS: dict[str, dict[str, int]] = {
    "device_late_24h_returns": {"ts_offset_ms": -86_400_000},
    "device_repeated_returns": {"repeat": 3},
}
PROCESS_FAULTS = (
    *(f"kill9_{s}" for s in SERVICES),
    "sigstop_broker",
    "sigstop_mosquitto",
    "restart_broker",
    "restart_mosquitto",
    "restart_postgres",
)


def now_s() -> float:
    return time.monotonic()


@dataclass
class Figures:
    flows_attempted: Counter[str] = field(default_factory=Counter)
    flows_completed: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    faults: list[dict[str, Any]] = field(default_factory=list)
    invariant_checks: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    rentals: set[str] = field(default_factory=set)
    # Rentals found active in the app after the borrow was answered with an error, by that answer.
    active_after_error: Counter[str] = field(default_factory=Counter)
    revived_rentals: int = 0  # answered as failed, then the late eject made them active (free of charge)

    def violation(self, check: str, detail: Any) -> None:
        self.violations.append({"check": check, "detail": detail, "at": datetime.now(UTC).isoformat()})
        print(f"  VIOLATION {check}: {str(detail)[:300]}", flush=True)


class Stack:
    """The chaos stack's processes, as `stack.py` started them."""

    def __init__(self, recovery_bound_s: float) -> None:
        self.recovery_bound_s = recovery_bound_s
        self.stack = load_stack("chaos")
        self.env = dict(os.environ)

    def pid_file(self, label: str) -> Path:
        return self.stack.pids / f"{label}.pid"

    def service_pid(self, label: str) -> int | None:
        return read_pid(self.pid_file(label))

    def port(self, label: str) -> int:
        if label == "device-svc-2":
            return self.stack.port_base + 22
        offsets = {"user-svc": 1, "device-svc": 2, "billing-svc": 3, "asset-credit-svc": 4}
        return self.stack.port_base + offsets.get(label, {"notify-svc": 5, "analytics-svc": 6}.get(label, 0))

    def tansu_pid(self) -> int | None:
        return read_pid(self.stack.pids / "tansu.pid")

    def mosquitto_pid(self) -> int | None:
        return read_pid(mosquitto_paths(self.stack)["pid"])

    def restart_services(self) -> None:
        """What a supervisor (systemd, Kubernetes) does for a dead process: start it again."""
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "deploy" / "local" / "stack.py"),
                "start-services",
                "--stack",
                "chaos",
                "--keep",
                "--timeout",
                str(int(self.recovery_bound_s)),
            ],
            check=False,
            capture_output=True,
            timeout=self.recovery_bound_s + 60,
        )

    def private_pg(self) -> bool:
        pg = read_meta(self.stack).get("pg")
        return isinstance(pg, dict) and pg.get("mode") == "private"


def respawn(pid: int) -> None:
    """Start a killed process again with its own command line and working directory (Mosquitto)."""
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    cwd = os.readlink(f"/proc/{pid}/cwd")
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid):
            break
        time.sleep(0.05)
    args = [c.decode() for c in cmd if c]
    subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "X"


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.urls = Urls.from_env()
        self.emulator = os.environ.get("EMULATOR_CONTROL_URL", "http://127.0.0.1:8010")
        self.stack = Stack(args.recovery_bound_s)
        self.fig = Figures()
        self.deadline = 0.0
        self.stopping = asyncio.Event()
        self.faulting = asyncio.Lock()
        self.return_fault: dict[str, int] = {}
        self.users_set_up = 0
        self.users_ready = asyncio.Event()  # the faults start once every user is registered and topped up
        self.users: list[PlatformClient] = []

    # ----------------------------------------------------------------- readiness

    async def all_ready(self, http: httpx.AsyncClient) -> bool:
        for label in SERVICES:
            try:
                r = await http.get(f"http://127.0.0.1:{self.stack.port(label)}/readyz", timeout=2.0)
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
        return True

    async def topics_sized(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        import kit.kafka  # noqa: F401  (its clients never create a topic by asking for it: see there)
        from contracts.topics import ALL_TOPICS

        admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"], request_timeout_ms=3000)
        try:
            await admin.start()
            described = await admin.describe_topics(list(ALL_TOPICS))
        except Exception:
            return False
        finally:
            await admin.close()
        sizes = {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
        wrong = {t: n for t, n in sizes.items() if n != KAFKA_PARTITIONS}
        if wrong:
            self.fig.violation("topics_recreated_with_their_partitions", wrong)
            return True  # recorded; do not wait for what will not change
        return len(sizes) == len(ALL_TOPICS)

    async def recovered(self, http: httpx.AsyncClient, kind: str, started: float) -> float:
        """Seconds from the fault to every service ready again (and, after a broker restart, every topic back
        with its partitions); a violation past the bound."""
        while now_s() - started < self.args.recovery_bound_s:
            if await self.all_ready(http) and (kind != "restart_broker" or await self.topics_sized()):
                return now_s() - started
            await asyncio.sleep(0.25)
        self.fig.violation("ready_again_within_bound", {"fault": kind, "bound_s": self.args.recovery_bound_s})
        return now_s() - started

    # ----------------------------------------------------------------- faults

    async def inject(self, http: httpx.AsyncClient, kind: str) -> None:
        started = now_s()
        detail: dict[str, Any] = {}
        st = self.stack
        if kind.startswith("kill9_"):
            label = kind.removeprefix("kill9_")
            pid = st.service_pid(label)
            if pid:
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(st.restart_services)
        elif kind in ("sigstop_broker", "sigstop_mosquitto"):
            pid = st.tansu_pid() if kind == "sigstop_broker" else st.mosquitto_pid()
            if pid:
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(self.args.pause_s)
                os.kill(pid, signal.SIGCONT)
        elif kind == "restart_broker":
            pid = st.tansu_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.3)
            await asyncio.to_thread(start_tansu, st.stack)
        elif kind == "restart_mosquitto":
            pid = st.mosquitto_pid()
            if pid:
                await asyncio.to_thread(respawn, pid)
        elif kind == "restart_postgres":
            if not st.private_pg():
                detail["skipped"] = "PostgreSQL is a system server here, not the stack's own: not restarted"
            else:
                await asyncio.to_thread(restart_private_pg)
        elif kind.startswith("device_"):
            detail = await self.device_fault(http, kind)
        recovery = await self.recovered(http, kind, started)
        if kind.startswith("device_"):
            await self.clear_device_faults(http)
        self.fig.faults.append({"kind": kind, "recovery_s": round(recovery, 2), **detail})
        print(f"  fault {kind:24s} recovered in {recovery:5.1f} s {detail or ''}", flush=True)

    async def cabinets(self, http: httpx.AsyncClient) -> list[str]:
        body = (await http.get(f"{self.emulator}/cabinets")).json()
        return [c["cabinet_id"] for c in body["cabinets"]]

    async def device_fault(self, http: httpx.AsyncClient, kind: str) -> dict[str, Any]:
        if kind in RETURN_FAULTS:
            self.return_fault = RETURN_FAULTS[kind]
            await asyncio.sleep(self.args.device_fault_s)
            self.return_fault = {}
            return {"returns": RETURN_FAULTS[kind]}
        cabinets = await self.cabinets(http)
        chosen = self.rng.sample(cabinets, k=max(1, len(cabinets) // 2))
        by_kind: dict[str, dict[str, Any]] = {
            "device_lost_ack": {"drop_acks": True},
            "device_duplicate": {"duplicate": 3},
            "device_delay": {"delay_s": 2.0},
            "device_clock_skew": {"clock_skew_ms": self.rng.choice((-1, 1)) * 600_000},
            "device_clock_1970": {"clock_skew_ms": -int(time.time() * 1000)},
        }
        faults = by_kind[kind]
        for cabinet in chosen:
            await http.post(f"{self.emulator}/cabinets/{cabinet}/faults", json=faults)
        await asyncio.sleep(self.args.device_fault_s)
        return {"cabinets": len(chosen), "faults": faults}

    async def clear_device_faults(self, http: httpx.AsyncClient) -> None:
        clear = {"drop_acks": False, "duplicate": 1, "delay_s": 0, "clock_skew_ms": 0, "drop_messages": False}
        for cabinet in await self.cabinets(http):
            await http.post(f"{self.emulator}/cabinets/{cabinet}/faults", json=clear)

    async def fault_schedule(self, http: httpx.AsyncClient) -> None:
        kinds = list(PROCESS_FAULTS + DEVICE_FAULTS)
        order: list[str] = []
        await self.users_ready.wait()
        self.deadline = now_s() + self.args.duration_s  # the run is counted from here: setup is not fault time
        await asyncio.sleep(self.args.warmup_s)
        while now_s() < self.deadline:
            if not order:
                order = self.rng.sample(kinds, k=len(kinds))  # every kind once per round, seeded order
            kind = order.pop()
            async with self.faulting:
                try:  # a fault that never ends (a stuck restart) is a finding, not a hung run
                    await asyncio.wait_for(self.inject(http, kind), self.args.recovery_bound_s * 3)
                except (OSError, httpx.HTTPError, subprocess.SubprocessError, TimeoutError) as exc:
                    self.fig.violation("fault_injection_failed", {"fault": kind, "error": repr(exc)})
            await asyncio.sleep(self.args.fault_every_s * self.rng.uniform(0.5, 1.5))

    # ----------------------------------------------------------------- users

    async def new_user(self, http: httpx.AsyncClient, index: int) -> PlatformClient:
        """Register (or, after an answer lost to a timeout, log in), then top up. Before the faults start."""
        api = PlatformClient(self.urls, http)
        phone = f"+86137{self.args.seed % 100:02d}{index:06d}"
        password = "chaos-pass-1234"
        last = "nothing tried"
        for _ in range(20):
            try:
                if (await api.login(phone, password)).status != 200:
                    reg = await api.register(phone, password)
                    last = f"register {reg.status} {reg.response.text[:200]}"
                    if reg.status not in (201, 409) or (await api.login(phone, password)).status != 200:
                        await asyncio.sleep(3)
                        continue
                api.phone, api.password = phone, password  # type: ignore[attr-defined]
                if await self.top_up(api, 20_000):
                    return api
                last = "top-up not succeeded"
            except httpx.HTTPError as exc:  # a loaded machine: registering hashes a password
                last = repr(exc)
            await asyncio.sleep(3)
        raise RuntimeError(f"user {index} could not register and top up: {last}")

    async def top_up(self, api: PlatformClient, amount: int) -> bool:
        self.fig.flows_attempted["top_up"] += 1
        top = await api.top_up(amount, self.rng.choice(("alipay", "wechat")))
        if top.status not in (200, 201):
            self.fig.refusals[f"top_up {top.status}"] += 1
            return False
        top_up_id = top.json()["top_up_id"]
        for _ in range(240):
            try:
                status = (await api.top_up_status(top_up_id)).json().get("status")
            except (httpx.HTTPError, ValueError):
                status = None
            if status == "succeeded":
                self.fig.flows_completed["top_up"] += 1
                return True
            if status == "failed":
                return False
            await asyncio.sleep(0.5)
        return False

    async def deposit_cycle(self, api: PlatformClient) -> None:
        """Pay the deposit through a channel (the sandbox pays it), then ask for it back (refunded to that
        order at the provider); complete once both operations succeeded."""
        self.fig.flows_attempted["deposit"] += 1
        deposit = await api.call("GET", f"{self.urls.asset}/v1/deposit")
        if deposit.status != 200:
            await self.relogin_if_needed(api, deposit.status)
            self.fig.refusals[f"deposit {deposit.status}"] += 1
            return
        if deposit.json()["held_fen"] == 0:
            paid = await api.call(
                "POST",
                f"{self.urls.asset}/v1/deposit/payments",
                json={"channel": self.rng.choice(("alipay", "wechat"))},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            if paid.status not in (200, 201):
                self.fig.refusals[f"deposit pay {paid.status} {self.code_of(paid)}"] += 1
                return
            if not await self.wait_deposit_operation(api, paid.json()["operation_id"]):
                self.fig.refusals["deposit pay: not succeeded in time"] += 1
                return
        refund = await api.call(
            "POST", f"{self.urls.asset}/v1/deposit/refunds", headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        if refund.status not in (200, 201):
            self.fig.refusals[f"deposit refund {refund.status} {self.code_of(refund)}"] += 1
            return
        if await self.wait_deposit_operation(api, refund.json()["operation_id"]):
            self.fig.flows_completed["deposit"] += 1
        else:
            self.fig.refusals["deposit refund: not confirmed in time"] += 1

    async def wait_deposit_operation(self, api: PlatformClient, operation_id: str) -> bool:
        end = now_s() + self.args.recovery_bound_s
        while now_s() < end:
            try:
                history = await api.call("GET", f"{self.urls.asset}/v1/deposit/history", params={"limit": 20})
                if history.status == 200:
                    for item in history.json()["items"]:
                        if item["operation_id"] == operation_id and item["status"] != "pending":
                            return bool(item["status"] == "succeeded")
                await self.relogin_if_needed(api, history.status)
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.5)
        return False

    async def withdraw(self, api: PlatformClient) -> None:
        """Take ¥3 of the balance back to the channels it came in by; complete once every part is confirmed."""
        self.fig.flows_attempted["withdrawal"] += 1
        asked = await api.call(
            "POST",
            f"{self.urls.asset}/v1/wallet/withdrawals",
            json={"amount_fen": 300},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        if asked.status not in (200, 201):
            await self.relogin_if_needed(api, asked.status)
            self.fig.refusals[f"withdrawal {asked.status} {self.code_of(asked)}"] += 1
            return
        withdrawal_id = asked.json()["withdrawal_id"]
        end = now_s() + self.args.recovery_bound_s
        while now_s() < end:
            try:
                moves = await api.call(
                    "GET", f"{self.urls.asset}/v1/wallet/movements", params={"kind": "withdrawal", "limit": 50}
                )
                if moves.status == 200:
                    parts = [m for m in moves.json()["items"] if m["reference_id"] == withdrawal_id]
                    if parts and all(p["status"] == "succeeded" for p in parts):
                        self.fig.flows_completed["withdrawal"] += 1
                        return
                await self.relogin_if_needed(api, moves.status)
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.5)
        self.fig.refusals["withdrawal: not confirmed in time"] += 1

    @staticmethod
    def code_of(timed: Any) -> str | None:
        try:
            body = timed.json() if timed.response.content else {}
        except ValueError:
            return None
        return body.get("code") if isinstance(body, dict) else None

    async def relogin_if_needed(self, api: PlatformClient, status: int) -> None:
        if status == 401:
            await api.login(api.phone, api.password)  # type: ignore[attr-defined]

    async def rent_once(self, http: httpx.AsyncClient, api: PlatformClient) -> None:
        cabinets = await self.cabinets(http)
        code = self.rng.choice(cabinets)
        self.fig.flows_attempted["rental"] += 1
        try:
            borrowed = await api.borrow(code)
        except httpx.HTTPError as exc:
            self.fig.refusals[f"borrow {type(exc).__name__}"] += 1
            await self.return_what_came_out(http, api, f"borrow {type(exc).__name__}")
            return
        if borrowed.status != 201:
            await self.relogin_if_needed(api, borrowed.status)
            try:
                body = borrowed.json() if borrowed.response.content else {}
            except ValueError:  # a proxy's or a dying server's answer
                body = {}
            code_ = body.get("code") if isinstance(body, dict) else None
            self.fig.refusals[f"borrow {borrowed.status} {code_}"] += 1
            if isinstance(body, dict) and (rid := body.get("rental_id")):
                self.fig.rentals.add(rid)
            if borrowed.status >= 500:
                await self.return_what_came_out(http, api, f"borrow {borrowed.status} {code_}")
            return
        rental = borrowed.json()
        self.fig.rentals.add(rental["rental_id"])
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))
        if await self.give_back(http, api, rental):
            self.fig.flows_completed["rental"] += 1

    async def give_back(self, http: httpx.AsyncClient, api: PlatformClient, rental: dict[str, Any]) -> bool:
        """Push the rental's bank into a cabinet with room, then wait for the rental to be final."""
        cabinets = await self.cabinets(http)
        for target in self.rng.sample(cabinets, k=len(cabinets)):
            try:
                ret = await http.post(
                    f"{self.emulator}/cabinets/{target}/return",
                    json={"bank_id": rental["bank_id"], **self.return_fault},
                )
            except httpx.HTTPError:
                continue
            if ret.status_code == 200:
                break
        else:
            self.fig.refusals["return: no cabinet took the bank"] += 1
            return False
        return await self.wait_final(api, rental["rental_id"], 120)

    async def open_rentals(self, api: PlatformClient) -> list[dict[str, Any]] | None:
        """The user's unlocking and active rentals, as the app lists them (None when billing does not answer)."""
        try:
            listed = await api.call("GET", f"{self.urls.billing}/v1/rentals", params={"limit": 10})
            if listed.status != 200:
                await self.relogin_if_needed(api, listed.status)
                return None
            return [r for r in listed.json()["items"] if r["state"] in ("unlocking", "active")]
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    async def return_what_came_out(
        self, http: httpx.AsyncClient, api: PlatformClient, after: str, *, wait: bool = True
    ) -> None:
        """After an error answer the user looks at the app: a rental still unlocking is waited for (up to the
        recovery bound), and the bank of every active one is in the user's hand and goes back. Without `wait`,
        one look (between two flows)."""
        end = now_s() + self.args.recovery_bound_s
        while now_s() < end:
            found = await self.open_rentals(api)
            if found is None or any(r["state"] == "unlocking" for r in found):
                if not wait:
                    return
                await asyncio.sleep(0.5 if found else 1)
                continue
            for rental in found:
                self.fig.rentals.add(rental["rental_id"])
                self.fig.active_after_error[after] += 1
                self.fig.flows_attempted["rental_after_error"] += 1
                if await self.give_back(http, api, rental):
                    self.fig.flows_completed["rental_after_error"] += 1
            return

    async def wait_final(self, api: PlatformClient, rental_id: str, timeout_s: float) -> bool:
        end = now_s() + timeout_s
        while now_s() < end:
            try:
                timed = await api.call("GET", f"{self.urls.billing}/v1/rentals/{rental_id}")
                if timed.status == 200 and timed.json()["state"] in FINAL_RENTAL_STATES:
                    return True
                await self.relogin_if_needed(api, timed.status)
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.5)
        return False

    async def user_loop(self, http: httpx.AsyncClient, index: int) -> None:
        try:
            api = await self.new_user(http, index)
        finally:
            self.users_set_up += 1
            if self.users_set_up == self.args.users:
                self.users_ready.set()
        self.users.append(api)
        n = 0
        while now_s() < self.deadline:
            n += 1
            try:
                # A bank whose eject landed after an error answer (a revived rental) shows up later.
                await self.return_what_came_out(http, api, "found later in the app", wait=False)
                if n % 6 == 0:
                    await self.top_up(api, 2_000)  # payments while faults happen
                elif n % 9 == 0:
                    await self.deposit_cycle(api)
                elif n % 10 == 0:
                    await self.withdraw(api)
                else:
                    await self.rent_once(http, api)
            except (httpx.HTTPError, ValueError, KeyError) as exc:  # a service down mid-flow: an answer that is no JSON
                self.fig.refusals[f"flow {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))

    # ----------------------------------------------------------------- invariants

    async def db(self, name: str) -> asyncpg.Connection:
        url = os.environ[f"{name}_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        return await asyncpg.connect(url, timeout=5)

    async def rows(self, name: str, sql: str) -> list[asyncpg.Record]:
        conn = await self.db(name)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    async def check_continuous(self) -> None:
        """What must hold at every moment, faults or not."""
        checks = {
            "bank_in_at_most_one_open_rental": (
                "BILLING",
                "SELECT bank_id, count(*) AS n FROM rentals WHERE state IN ('unlocking', 'active') "
                "AND bank_id IS NOT NULL GROUP BY bank_id HAVING count(*) > 1",
            ),
            # A borrow answered as failed whose eject landed after all: the user holds the bank (the rental is
            # active again, visible in the app) but was told nothing is charged, so its fee is 0.
            "revived_rentals_are_free": (
                "BILLING",
                "SELECT id, fee_fen FROM rentals WHERE revived_at IS NOT NULL AND NOT purchased AND fee_fen > 0",
            ),
            "ledger_transactions_balance": (
                "ASSET",
                "SELECT transaction_id, sum(amount_fen) AS s FROM postings GROUP BY transaction_id "
                "HAVING sum(amount_fen) <> 0",
            ),
            "wallet_equals_its_entries": (
                "ASSET",
                "SELECT a.id, a.balance_fen, coalesce(sum(p.amount_fen), 0) AS entries FROM accounts a "
                "LEFT JOIN postings p ON p.account_id = a.id GROUP BY a.id, a.balance_fen "
                "HAVING a.balance_fen <> coalesce(sum(p.amount_fen), 0)",
            ),
            "books_sum_to_zero": (  # double entry: money moves between accounts, none is made or lost
                "ASSET",
                "SELECT sum(balance_fen) AS total FROM accounts HAVING sum(balance_fen) <> 0",
            ),
            "deposit_held_matches_its_operations": (
                "ASSET",
                "SELECT a.user_id, a.balance_fen, coalesce(o.held, 0) AS operations FROM accounts a "
                "LEFT JOIN (SELECT user_id, sum(CASE WHEN kind = 'pay' THEN amount_fen ELSE -amount_fen END) AS held "
                "FROM deposit_operations WHERE transaction_id IS NOT NULL GROUP BY user_id) o ON o.user_id = a.user_id "
                "WHERE a.kind = 'user_deposit' AND a.balance_fen <> coalesce(o.held, 0)",
            ),
            "withdrawal_parts_match_the_withdrawal": (
                "ASSET",
                "SELECT w.id, w.amount_fen, coalesce(sum(p.amount_fen), 0) AS parts FROM withdrawals w "
                "LEFT JOIN withdrawal_parts p ON p.withdrawal_id = w.id WHERE w.transaction_id IS NOT NULL "
                "GROUP BY w.id, w.amount_fen HAVING w.amount_fen <> coalesce(sum(p.amount_fen), 0)",
            ),
            "withdrawn_at_most_what_a_top_up_brought": (
                "ASSET",
                "SELECT t.id, t.status, t.amount_fen, sum(p.amount_fen) AS withdrawn FROM withdrawal_parts p "
                "JOIN top_ups t ON t.id = p.top_up_id GROUP BY t.id, t.status, t.amount_fen "
                "HAVING t.status <> 'succeeded' OR sum(p.amount_fen) > t.amount_fen",
            ),
            "no_double_charge": (
                "ASSET",
                "SELECT rental_id, count(*) AS n FROM charges WHERE status = 'settled' GROUP BY rental_id "
                "HAVING count(*) > 1",
            ),
        }
        for check, (database, sql) in checks.items():
            try:
                found = await self.rows(database, sql)
            except DB_UNREACHABLE:
                continue  # PostgreSQL restarting: checked again at the next tick
            self.fig.invariant_checks += 1
            if found:
                self.fig.violation(check, [dict(r) for r in found[:5]])

    async def watch_invariants(self) -> None:
        while not self.stopping.is_set():
            await self.check_continuous()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.args.check_every_s)

    async def settle_and_check_end(self, http: httpx.AsyncClient) -> None:
        """After the last fault: everything must come to rest, then hold together."""
        await self.clear_device_faults(http)
        started = now_s()
        while now_s() - started < self.args.settle_s:
            # Banks whose eject landed late are in their users' hands: they bring them back.
            await asyncio.gather(
                *(self.return_what_came_out(http, api, "found at the end in the app") for api in self.users)
            )
            if (
                await self.all_ready(http)
                and not await self.unsettled()
                and not await self.stranded()
                and not await self.refunds_pending()
            ):
                break
            await asyncio.sleep(1)
        await self.check_continuous()
        open_rentals = await self.unsettled()
        self.fig.invariant_checks += 1
        if open_rentals:
            self.fig.violation("every_rental_reaches_a_final_state", open_rentals[:10])
        stranded = await self.stranded()
        self.fig.invariant_checks += 1
        if stranded:
            self.fig.violation("nothing_stranded_outbox_or_parked", stranded)
        await self.check_charges_match()
        await self.check_payments_credited_once()
        await self.check_banks_out(http)
        revived = await self.rows("BILLING", "SELECT count(*) AS n FROM rentals WHERE revived_at IS NOT NULL")
        self.fig.revived_rentals = revived[0]["n"]
        pending = await self.refunds_pending()
        self.fig.invariant_checks += 1
        if pending:
            self.fig.violation("provider_refunds_confirmed", pending)

    async def refunds_pending(self) -> dict[str, int]:
        """Deposit refunds and withdrawal parts the provider has not confirmed (the sweep retries them)."""
        try:
            deposit = await self.rows(
                "ASSET", "SELECT count(*) AS n FROM deposit_operations WHERE kind = 'refund' AND status = 'pending'"
            )
            parts = await self.rows("ASSET", "SELECT count(*) AS n FROM withdrawal_parts WHERE status = 'pending'")
        except DB_UNREACHABLE:
            return {"unreachable": 1}
        found = {"deposit_refunds": deposit[0]["n"], "withdrawal_parts": parts[0]["n"]}
        return {k: v for k, v in found.items() if v}

    async def check_banks_out(self, http: httpx.AsyncClient) -> None:
        """What the cabinets say against what billing says, once everything is at rest: a bank out of every
        cabinet with no open rental was ejected without the user seeing a rental (or lost its return), and an
        open rental whose bank is in a cabinet bills a user who holds nothing."""
        out: dict[str, str] = {}
        in_slots: set[str] = set()
        try:
            for cabinet in (await http.get(f"{self.emulator}/cabinets")).json()["cabinets"]:
                # A cabinet lists what it ejected and did not get back itself; the bank may be in another one.
                out.update({bank: cabinet["cabinet_id"] for bank in cabinet["banks_out"]})
                in_slots.update(s["bank_id"] for s in cabinet["slots"] if s.get("bank_id"))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.fig.violation("emulator_answers", repr(exc))
            return
        out = {bank: cabinet for bank, cabinet in out.items() if bank not in in_slots}
        open_banks = {
            r["bank_id"]: str(r["id"])
            for r in await self.rows(
                "BILLING", "SELECT id, bank_id FROM rentals WHERE state = 'active' AND bank_id IS NOT NULL"
            )
        }
        self.fig.invariant_checks += 1
        without_rental = {bank: cabinet for bank, cabinet in out.items() if bank not in open_banks}
        if without_rental:
            # With the last rental billing has of each, and device-svc's last command for it: the evidence.
            last = {
                r["bank_id"]: f"rental {r['id']} {r['state']} {r['failure_reason'] or ''}".strip()
                for r in await self.rows(
                    "BILLING",
                    "SELECT DISTINCT ON (bank_id) bank_id, id, state, failure_reason FROM rentals "
                    "WHERE bank_id IS NOT NULL ORDER BY bank_id, requested_at DESC",
                )
            }
            commands = {
                r["bank_id"]: r["commands"]
                for r in await self.rows(
                    "DEVICE",
                    "SELECT bank_id, string_agg(status || ' ' || coalesce(result, ''), ', ' ORDER BY created_at DESC) "
                    "AS commands FROM commands GROUP BY bank_id",
                )
            }
            self.fig.violation(
                "every_bank_out_has_an_open_rental",
                {
                    bank: {
                        "out_of": cabinet,
                        "last_rental": last.get(bank),
                        "commands": (commands.get(bank) or "")[:120],
                    }
                    for bank, cabinet in without_rental.items()
                },
            )
        self.fig.invariant_checks += 1
        not_out = {bank: rental for bank, rental in open_banks.items() if bank not in out}
        if not_out:
            self.fig.violation("every_open_rental_holds_a_bank_that_is_out", not_out)

    async def unsettled(self) -> list[dict[str, Any]]:
        try:
            found = await self.rows(
                "BILLING", "SELECT id::text, state, bank_id FROM rentals WHERE state NOT IN ('settled', 'failed')"
            )
        except DB_UNREACHABLE:
            return [{"database": "unreachable"}]
        return [dict(r) for r in found]

    async def stranded(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for database in DATABASES:
            try:
                outbox = await self.rows(database, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                parked = await self.rows(database, "SELECT count(*) AS n FROM processed_events WHERE status = 'failed'")
            except DB_UNREACHABLE:
                found[database] = {"unreachable": 1}
                continue
            counts = {"unpublished": outbox[0]["n"], "parked": parked[0]["n"]}
            if any(counts.values()):
                found[database] = counts
        return found

    async def check_charges_match(self) -> None:
        """Every settled rental with something to pay has one settled charge of its amount; every settled charge
        belongs to a settled rental (the per-event audit of the charge path across billing and asset-credit)."""
        rentals = {
            str(r["id"]): r
            for r in await self.rows(
                "BILLING", "SELECT id, state, fee_fen, paid_fen FROM rentals WHERE state = 'settled'"
            )
        }
        charges = {
            str(r["rental_id"]): r
            for r in await self.rows("ASSET", "SELECT rental_id, amount_fen FROM charges WHERE status = 'settled'")
        }
        self.fig.invariant_checks += 1
        wrong = []
        for rid, rental in rentals.items():
            due = rental["paid_fen"] if rental["paid_fen"] is not None else rental["fee_fen"]
            charge = charges.get(rid)
            if due and (charge is None or charge["amount_fen"] != due):
                wrong.append({"rental": rid, "due": due, "charged": charge and charge["amount_fen"]})
        wrong += [{"charge_without_settled_rental": rid} for rid in charges if rid not in rentals]
        if wrong:
            self.fig.violation("every_rental_charge_matches", wrong[:10])

    async def check_payments_credited_once(self) -> None:
        found = await self.rows(
            "ASSET",
            "SELECT t.id::text, t.status, t.transaction_id::text FROM top_ups t WHERE "
            "(t.status = 'succeeded' AND t.transaction_id IS NULL) OR (t.status <> 'succeeded' AND t.transaction_id IS NOT NULL)",
        )
        self.fig.invariant_checks += 1
        if found:
            self.fig.violation("every_successful_payment_credited_exactly_once", [dict(r) for r in found[:10]])
        # The provider (the sandbox pays within seconds) took the money: a top-up still pending long after is
        # money paid and not credited (a notification lost while asset-credit was down, never asked again).
        stuck = await self.rows(
            "ASSET",
            "SELECT id::text, channel, created_at FROM top_ups WHERE status = 'pending' "
            "AND created_at < now() - interval '3 minutes'",
        )
        self.fig.invariant_checks += 1
        stuck += await self.rows(
            "ASSET",
            "SELECT id::text, channel, created_at FROM deposit_operations WHERE kind = 'pay' AND status = 'pending' "
            "AND created_at < now() - interval '3 minutes'",
        )
        if stuck:
            self.fig.violation("no_payment_left_pending", {"count": len(stuck), "first": [dict(r) for r in stuck[:5]]})

    # ----------------------------------------------------------------- run

    async def run(self) -> dict[str, Any]:
        started_at = datetime.now(UTC)
        async with httpx.AsyncClient(timeout=30.0) as http:
            if not await self.all_ready(http):
                raise SystemExit("chaos: the services are not ready; start them first (make chaos does)")
            self.deadline = now_s() + self.args.duration_s
            watcher = asyncio.create_task(self.watch_invariants())
            users = [asyncio.create_task(self.user_loop(http, i)) for i in range(self.args.users)]
            faults = asyncio.create_task(self.fault_schedule(http))
            results = await asyncio.gather(faults, *users, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    self.fig.violation("driver_crashed", repr(result))
            await self.settle_and_check_end(http)
            self.stopping.set()
            await watcher
        return self.summary(started_at)

    def summary(self, started_at: datetime) -> dict[str, Any]:
        by_kind: dict[str, list[float]] = defaultdict(list)
        for fault in self.fig.faults:
            by_kind[fault["kind"]].append(fault["recovery_s"])
        recovery = {
            k: {"count": len(v), "p50_s": round(statistics.median(v), 2), "max_s": max(v)}
            for k, v in sorted(by_kind.items())
        }
        skipped = sorted({f["kind"] for f in self.fig.faults if "skipped" in f})
        return {
            "seed": self.args.seed,
            "started_at": started_at.isoformat(),
            "duration_s": self.args.duration_s,
            "users": self.args.users,
            "faults_injected": len(self.fig.faults),
            "faults_by_kind": {k: v["count"] for k, v in recovery.items()},
            "faults_skipped": skipped,
            "flows_attempted": sum(self.fig.flows_attempted.values()),
            "flows_completed": sum(self.fig.flows_completed.values()),
            "flows_attempted_by_kind": dict(self.fig.flows_attempted),
            "flows_completed_by_kind": dict(self.fig.flows_completed),
            "rentals_seen": len(self.fig.rentals),
            "active_after_error_answer": dict(self.fig.active_after_error),
            "revived_rentals": self.fig.revived_rentals,
            "refusals": dict(self.fig.refusals.most_common()),
            "invariant_checks": self.fig.invariant_checks,
            "violations": len(self.fig.violations),
            "violation_details": self.fig.violations,
            "recovery_s_max": max((f["recovery_s"] for f in self.fig.faults), default=0.0),
            "recovery_by_kind": recovery,
            "faults": self.fig.faults,
        }


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [
        "# Chaos run",
        "",
        f"Seed {summary['seed']}, {summary['duration_s']} s, {summary['users']} users, started {summary['started_at']}.",
        "",
        f"- faults injected: **{summary['faults_injected']}** ({len(summary['faults_by_kind'])} kinds)",
        f"- flows attempted / completed: **{summary['flows_attempted']} / {summary['flows_completed']}** "
        f"({summary['flows_completed_by_kind']} of {summary['flows_attempted_by_kind']})",
        f"- invariant checks run: **{summary['invariant_checks']}**",
        f"- violations: **{summary['violations']}** (must be 0)",
        f"- slowest recovery: {summary['recovery_s_max']} s",
        "",
        "| fault | injected | recovery p50 (s) | recovery max (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {k} | {v['count']} | {v['p50_s']} | {v['max_s']} |" for k, v in summary["recovery_by_kind"].items()]
    if summary["faults_skipped"]:
        lines += ["", f"Skipped (not possible on this machine): {', '.join(summary['faults_skipped'])}."]
    lines += [
        "",
        "Rentals found active in the app after the borrow was answered with an error (the bank came out after all; "
        "the user gave it back):",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in summary["active_after_error_answer"].items()] or ["- none"]
    lines += ["", "Refusals and errors the users saw (expected under faults; none may break an invariant):", ""]
    lines += [f"- {k}: {v}" for k, v in summary["refusals"].items()] or ["- none"]
    if summary["violation_details"]:
        lines += ["", "## Violations", ""]
        lines += [
            f"- {v['check']}: `{json.dumps(v['detail'], default=str)[:400]}`" for v in summary["violation_details"]
        ]
    (out / "index.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--duration-s", type=float, default=300, help="how long users rent and faults are injected")
    p.add_argument("--users", type=int, default=6)
    p.add_argument("--fault-every-s", type=float, default=6.0, help="mean pause between two faults")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--pause-s", type=float, default=3.0, help="how long SIGSTOP holds the broker or Mosquitto")
    p.add_argument("--device-fault-s", type=float, default=5.0, help="how long a device fault lasts")
    p.add_argument("--recovery-bound-s", type=float, default=120.0, help="every service ready again within this")
    p.add_argument("--settle-s", type=float, default=180.0, help="after the run: time for everything to come to rest")
    p.add_argument("--check-every-s", type=float, default=5.0)
    p.add_argument("--report", type=Path, default=ROOT / "reports" / "chaos")
    args = p.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: every thread's stack, if a run seems stuck
    print(
        f"chaos: seed {args.seed}, {args.duration_s:.0f} s, {args.users} users, a fault every ~{args.fault_every_s} s"
    )
    summary = asyncio.run(Chaos(args).run())
    write_report(summary, args.report)
    print(
        f"chaos: {summary['faults_injected']} faults ({len(summary['faults_by_kind'])} kinds), flows "
        f"{summary['flows_completed']}/{summary['flows_attempted']} completed, {summary['invariant_checks']} invariant "
        f"checks, {summary['violations']} violations, slowest recovery {summary['recovery_s_max']} s; "
        f"report {args.report / 'index.md'}"
    )
    return 0 if summary["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
