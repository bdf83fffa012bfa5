"""Location freshness under accelerated time: idle banks with their own module (own MQTT connection and
credentials each) report their position on a compressed schedule, and the benchmark reads device-svc's
stored latest-position time of those banks from the outside (the ops API) to find the oldest one.

The standard (7.2) wants an idle bank's position at least every 4 hours. With `--time-scale K` every
duration of the device's schedule is divided by K (K = 3600: the 4 hours become 4 s), so a real age a of
a stored position stands for a x K in the bank's time. What the platform adds (MQTT, ingestion batches,
the database) is not scaled: at K = 3600 each real millisecond of delay costs 3.6 s of the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from contracts.mqtt import BankReport, Position, UpChannel, up_topic
from device_emulator.bench.swarm import DeviceCredentials, Swarm, SwarmDevice
from kit.mqtt_client import LiteClient, MqttLiteError

BUDGET_S = 4 * 3600.0  # 7.2: an idle bank reports its position at least every 4 hours
NOT_IDLE = frozenset({"rented", "retired"})  # as device-svc's position_overdue check


@dataclass(frozen=True, slots=True)
class BankModuleCredentials:
    bank_id: str
    password: str
    lat: float
    lon: float


def read_fleet_banks(path: Path) -> list[BankModuleCredentials]:
    """Banks with their own module from a fleet file (`device_svc.provision seed --bank-modules N`), placed at
    their cabinet's position."""
    data = json.loads(path.read_text())
    where = {c["cabinet_id"]: (float(c.get("lat") or 0.0), float(c.get("lon") or 0.0)) for c in data["cabinets"]}
    out = []
    for b in data.get("banks", []):
        lat, lon = where.get(b.get("cabinet_id") or "", (0.0, 0.0))
        out.append(BankModuleCredentials(b["bank_id"], b["password"], lat, lon))
    return out


@dataclass(frozen=True, slots=True)
class ReportSchedule:
    """Position reports every `every_s` (bank time) +- `jitter` (a fraction), compressed by `time_scale`."""

    every_s: float = 3 * 3600.0
    jitter: float = 0.2
    time_scale: float = 3600.0

    def next_delay(self, rng: random.Random) -> float:
        """Real seconds until a bank's next report."""
        return self.every_s * rng.uniform(1 - self.jitter, 1 + self.jitter) / self.time_scale

    @property
    def longest_s(self) -> float:
        """The longest gap the schedule allows, in bank time."""
        return self.every_s * (1 + self.jitter)


class SwarmBank(SwarmDevice):
    """An idle bank module: on connect and when its schedule says so, a `bank_report` with its position."""

    def __init__(self, creds: DeviceCredentials, swarm: Swarm, position: tuple[float, float]) -> None:
        super().__init__(creds, swarm)
        self.position = position
        self.reports_sent = 0
        self.last_report_at: float | None = None  # monotonic
        self.longest_gap_s = 0.0  # real seconds between two reports of this bank
        self.next_due = 0.0  # monotonic

    def report_payload(self) -> bytes:
        lat, lon = self.position
        report = BankReport(
            msg_id=self.next_msg_id(),
            ts=self.next_ts(),
            position=Position(lat=lat, lon=lon, accuracy_m=random.randint(5, 30)),
            battery_pct=90,
            charging=True,
            moving=False,
        )
        return report.model_dump_json().encode()

    def _sent(self) -> None:
        now = time.monotonic()
        if self.last_report_at is not None:
            self.longest_gap_s = max(self.longest_gap_s, now - self.last_report_at)
        self.last_report_at = now
        self.reports_sent += 1

    async def announce(self, client: LiteClient) -> None:
        """A module reports on connect (protocol.md); no hello."""
        await client.publish(up_topic(self.device_id, UpChannel.BANK_REPORT), self.report_payload())
        self._sent()

    def send_report(self) -> bool:
        client = self.client
        if client is None or not client.connected:
            return False
        try:
            client.publish_nowait(up_topic(self.device_id, UpChannel.BANK_REPORT), self.report_payload())
        except MqttLiteError:
            return False
        self._sent()
        return True


def bank_swarm(host: str, port: int, banks: list[BankModuleCredentials], **options: Any) -> Swarm:
    """A swarm of SwarmBank devices (a swarm of its own: the cabinet pacers never pick a bank)."""
    where = {b.bank_id: (b.lat, b.lon) for b in banks}

    def make(creds: DeviceCredentials, swarm: Swarm) -> SwarmDevice:
        return SwarmBank(creds, swarm, where[creds.device_id])

    creds = [DeviceCredentials(b.bank_id, b.password, 0) for b in banks]
    return Swarm(host, port, creds, device_factory=make, **options)


def swarm_banks(swarm: Swarm) -> list[SwarmBank]:
    return [d for d in swarm.devices if isinstance(d, SwarmBank)]


async def report_pacer(swarm: Swarm, schedule: ReportSchedule, rng: random.Random) -> None:
    """Send each bank's report when due (runs until cancelled). A bank's first due time counts from its
    connect report; a bank that is offline when due reports on reconnect (its announce) and goes on from there."""
    banks = swarm_banks(swarm)
    tick = max(0.005, min(0.05, schedule.every_s / schedule.time_scale / 20))
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        for bank in banks:
            last = bank.last_report_at
            if last is None:
                continue
            if bank.next_due <= last:  # a report (connect or scheduled) since the due time was set
                bank.next_due = last + schedule.next_delay(rng)
            if now >= bank.next_due and bank.send_report():
                bank.next_due = time.monotonic() + schedule.next_delay(rng)


@dataclass(slots=True)
class FreshnessSample:
    t: float  # seconds since the benchmark's start (its monotonic t0)
    idle: int
    unknown: int  # emulated banks device-svc did not list
    oldest_age_s: float | None  # real seconds
    ages_s: dict[str, float]  # idle bank -> real age


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value)).timestamp()


def sample_freshness(
    items: Iterable[Mapping[str, Any]], bank_ids: set[str], now_wall: float, since_wall: float, t: float
) -> FreshnessSample:
    """Ages of the stored latest positions of `bank_ids` (ops API bank rows) that are idle (not rented or
    retired). A position older than `since_wall` (the run's start: none of this run's reports was stored yet)
    or none at all counts from `since_wall`, as device-svc counts an overdue period from a bank's last
    position or state change."""
    ages: dict[str, float] = {}
    seen = set()
    for item in items:
        bid = item.get("id")
        if bid not in bank_ids:
            continue
        seen.add(bid)
        if item.get("state") in NOT_IDLE:
            continue
        at = _parse_time(item.get("position_at"))
        ages[str(bid)] = max(0.0, now_wall - max(at if at is not None else since_wall, since_wall))
    oldest = max(ages.values()) if ages else None
    return FreshnessSample(t, len(ages), len(bank_ids - seen), oldest, ages)


@dataclass
class FreshnessProbe:
    """Reads the emulated banks' stored positions from device-svc (`GET /v1/ops/banks?has_module=true`)."""

    http: httpx.AsyncClient
    device_url: str
    auth: Callable[[], Any]  # async: the admin's Authorization header
    bank_ids: set[str]
    since_wall: float
    t0: float  # monotonic start of the benchmark
    samples: list[FreshnessSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)

    async def sample(self) -> FreshnessSample | None:
        """One reading; ages count from when it was asked (a reply's own latency is not charged)."""
        now_wall, start = time.time(), time.monotonic()
        rows: list[Mapping[str, Any]] = []
        try:
            headers = await self.auth()
            offset = 0
            while True:
                r = await self.http.get(
                    f"{self.device_url}/v1/ops/banks",
                    params={"has_module": "true", "limit": 1000, "offset": offset},
                    headers=headers,
                    timeout=30,
                )
                if r.status_code != 200:
                    raise RuntimeError(f"GET /v1/ops/banks: HTTP {r.status_code} {r.text[:120]}")
                page = r.json()["items"]
                rows += page
                if len(page) < 1000:
                    break
                offset += 1000
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return None
        self.request_ms.append((time.monotonic() - start) * 1000)
        s = sample_freshness(rows, self.bank_ids, now_wall, self.since_wall, start - self.t0)
        self.samples.append(s)
        return s

    async def watch(self, every_s: float) -> None:
        """Sample every `every_s` until cancelled."""
        while True:
            await self.sample()
            await asyncio.sleep(every_s)


def freshness_summary(
    samples: list[FreshnessSample],
    *,
    banks: int,
    time_scale: float,
    window: tuple[float, float],
    longest_gap_s: float | None,
) -> dict[str, Any]:
    """The summary.json figures: the oldest latest-position age among idle banks over the samples in
    `window` (seconds since t0), in bank time (real x time_scale) and real seconds, against the 4 h budget."""
    inside = [s for s in samples if window[0] <= s.t <= window[1]]
    oldest = max((s.oldest_age_s for s in inside if s.oldest_age_s is not None), default=None)
    stale = {b for s in inside for b, age in s.ages_s.items() if age * time_scale > BUDGET_S}
    final = inside[-1] if inside else None

    def scaled(real: float | None) -> float | None:
        return None if real is None else round(real * time_scale, 1)

    return {
        "freshness_banks": banks,
        "freshness_time_scale": time_scale,
        "freshness_budget_s": BUDGET_S,
        "freshness_oldest_position_s": scaled(oldest),
        "freshness_oldest_position_real_s": None if oldest is None else round(oldest, 3),
        "freshness_final_oldest_position_s": scaled(final.oldest_age_s if final else None),
        "freshness_idle_banks": final.idle if final else None,
        "freshness_stale_banks": len(stale) if inside else None,
        "freshness_samples": len(inside),
        "freshness_max_report_gap_s": scaled(longest_gap_s),
    }


async def cancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
