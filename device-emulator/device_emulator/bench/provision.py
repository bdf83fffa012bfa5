"""Provision a benchmark fleet through device-svc's admin API, as an operator's tooling would: the emulator
depends on the contracts and the public HTTP API only, never on device-svc's code or database.

    python -m device_emulator.bench.provision --cabinets 20003 --slots 8 --fleet-out fleet.json [--seed 42]
        [--bank-modules N] [--volinks N]

1. `POST /v1/admin/cabinets/import` (thousands a request, `--parallel` requests in flight): each new cabinet
   gets its slots and a credential, its password in the answer, once; ids already registered are skipped.
2. `POST /v1/admin/banks/import` for the new cabinets' banks (the last `--bank-modules` banks with a module of
   their own: a credential each). Imported banks are in no slot yet: the cabinets report them in their hello
   (device_emulator.bench.swarm) and device-svc places them, as with real hardware.
3. The fleet file (0600, the only place plaintext passwords live): every cabinet with its password and the
   banks it starts with. A device skipped because it is registered keeps its entry from the previous fleet
   file; one the file does not know gets a new password (`credentials/rotate`).

Reads DEVICE_SVC_URL, USER_SVC_URL (the staff sign-in; PB_ADMIN_LOGIN / PB_ADMIN_PASSWORD, default the dev
stacks' administrator) and MQTT_HOST / MQTT_PORT / MQTT_CA_FILE (written into the fleet file).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from contracts.vendors import volinks
from device_emulator.bench.report import say
from device_emulator.bench.users import ApiError, admin_token

ROOT = Path(__file__).resolve().parents[3]
ORIGIN = (22.54, 114.05)  # Shenzhen, Futian
SPACING_DEG = 0.003  # about 330 m north-south, 310 m east-west
EMPTY_SLOTS = 2  # each cabinet starts with two free slots, for returns
FIRMWARE = "bench-1.0"
VOLINKS_SN_BASE = 10_000_000
IMPORT_CHUNK = 2500  # items per import request (device-svc's limit is 5,000)
PARALLEL_REQUESTS = 3  # import requests in flight at once
DEFAULT_ADMIN = ("admin", "dev-admin-password")


@dataclass(frozen=True)
class PlannedCabinet:
    cabinet_id: str
    number: int
    lat: float
    lon: float
    slot_count: int
    protocol: str
    banks: dict[int, tuple[str, int]]  # slot -> (bank id, battery %)


def cabinet_id(n: int) -> str:
    return f"CAB-{n:04d}"


def volinks_cabinet_id(n: int) -> str:
    return f"VL-CAB-{n:04d}"


def plan_fleet(cabinets: int, slots: int, *, rng_seed: int = 42, volinks_cabinets: int = 0) -> list[PlannedCabinet]:
    """`cabinets` of the platform's own on a grid in Futian (ids CAB-0001...; banks PB-000001..., all but two
    slots filled), then `volinks_cabinets` of another maker after them (VL-CAB-0001..., banks named by SN,
    slot counts a multiple of 4). The same arguments plan the same fleet."""
    rng = random.Random(rng_seed)
    filled = max(slots - EMPTY_SLOTS, 0)
    plan = []
    for n in range(1, cabinets + 1):
        lat, lon = _position(n, rng)
        banks = {s: (f"PB-{(n - 1) * filled + s:06d}", rng.randint(60, 100)) for s in range(1, filled + 1)}
        plan.append(PlannedCabinet(cabinet_id(n), n, lat, lon, slots, "native", banks))
    board = volinks.HOLES_PER_BOARD
    vendor_slots = -(-slots // board) * board
    for n in range(1, volinks_cabinets + 1):
        lat, lon = _position(cabinets + n, rng)
        banks = {
            s: (volinks.bank_id_of(VOLINKS_SN_BASE + (n - 1) * filled + s), rng.randint(60, 100))
            for s in range(1, filled + 1)
        }
        vendor = PlannedCabinet(volinks_cabinet_id(n), cabinets + n, lat, lon, vendor_slots, volinks.PROTOCOL, banks)
        plan.append(vendor)
    return plan


def _position(n: int, rng: random.Random) -> tuple[float, float]:
    row, col = divmod(n - 1, 4)
    lat = round(ORIGIN[0] + row * SPACING_DEG + rng.uniform(-0.0004, 0.0004), 6)
    lon = round(ORIGIN[1] + col * SPACING_DEG + rng.uniform(-0.0004, 0.0004), 6)
    return lat, lon


def bank_identity(bank_id: str) -> dict[str, str]:
    """The QR code printed on a bank, its NFC tag id and its Bluetooth address (derived from the id: a
    re-planned fleet has the same ones)."""
    digest = hashlib.sha256(bank_id.encode()).hexdigest()
    return {
        "qr_code": f"https://pb.example/q/{bank_id}",
        "nfc_uid": digest[:14].upper(),
        "ble_mac": ":".join(digest[i : i + 2] for i in range(0, 12, 2)).upper(),
    }


def _cabinet_item(c: PlannedCabinet) -> dict[str, Any]:
    return {
        "id": c.cabinet_id,
        "name": f"Futian station {c.number}",
        "lat": c.lat,
        "lon": c.lon,
        "address": f"Futian District, Shenzhen, point {c.number}",
        "region": "Futian",
        "slot_count": c.slot_count,
        "protocol": c.protocol,
    }


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class Provisioned:
    cabinets_created: int = 0
    banks_created: int = 0
    passwords_issued: int = 0
    rotated: int = 0
    requests: int = 0
    seconds_by_step: dict[str, float] = field(default_factory=dict)


class AdminApi:
    def __init__(self, http: httpx.AsyncClient, device_url: str, user_url: str, login: tuple[str, str]) -> None:
        self._http = http
        self._device_url = device_url
        self._user_url = user_url
        self._login = login
        self._headers: dict[str, str] | None = None
        self._signing_in = asyncio.Lock()  # requests in parallel sign in once

    async def post(self, path: str, body: Any = None) -> Any:
        async with self._signing_in:
            if self._headers is None:
                token = await admin_token(self._http, self._user_url, self._login)
                self._headers = {"Authorization": f"Bearer {token}"}
        r = await self._http.post(f"{self._device_url}{path}", json=body, headers=self._headers)
        if r.status_code >= 300:
            raise ApiError(f"POST {path}", r)
        return r.json()


async def provision(
    api: AdminApi,
    plan: Sequence[PlannedCabinet],
    *,
    bank_modules: int = 0,
    known: dict[str, dict[str, Any]] | None = None,
    chunk: int = IMPORT_CHUNK,
    parallel: int = PARALLEL_REQUESTS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Provisioned]:
    """Import `plan` (the last `bank_modules` banks of the platform's own cabinets get a module); returns the
    fleet file's cabinet and bank-module entries and what was done. `known`: the previous fleet file's entries
    by device id (cabinets and bank modules), kept for devices that are registered already. Up to `parallel`
    requests are in flight: each import is one transaction of its own, so device-svc's replicas (and one
    replica's database connections) work on several at once; a chunk's banks follow its cabinets at once.
    `seconds_by_step`: until the last cabinet chunk was answered, and until everything was (both from the
    start: the two overlap)."""
    known = known or {}
    done = Provisioned()
    passwords: dict[str, str] = {}
    gate = asyncio.Semaphore(max(1, parallel))

    async def post(path: str, body: Any = None) -> Any:
        async with gate:
            done.requests += 1
            return await api.post(path, body)

    started = time.monotonic()
    created: set[str] = set()
    native_banks = [bank for c in plan if c.protocol == "native" for bank, _ in c.banks.values()]
    modules = set(native_banks[-bank_modules:]) if bank_modules > 0 else set()

    def bank_items(cabinets: Sequence[PlannedCabinet], include: Callable[[PlannedCabinet, str], bool]) -> list[Any]:
        return [
            {"id": bank, "module": bank in modules, **bank_identity(bank)}
            for c in cabinets
            for bank, _ in c.banks.values()
            if include(c, bank)
        ]

    async def import_banks(items: list[Any]) -> None:
        parts = [list(part) for part in _chunks(items, chunk)]
        for answer in await asyncio.gather(*(post("/v1/admin/banks/import", {"items": part}) for part in parts)):
            done.banks_created += len(answer["created"])
            for item in answer["created"]:
                if item.get("credential"):
                    passwords[item["id"]] = item["credential"]["password"]

    async def import_cabinets(cabinets: Sequence[PlannedCabinet]) -> None:
        """A chunk of cabinets, then at once the banks of those it created: the banks' imports (database and CPU
        work) overlap the next cabinets' (which wait for the brokers to take their credentials)."""
        answer = await post("/v1/admin/cabinets/import", {"items": [_cabinet_item(c) for c in cabinets]})
        mine = {item["id"] for item in answer["created"]}
        created.update(mine)
        for item in answer["created"]:
            if item.get("credential"):
                passwords[item["id"]] = item["credential"]["password"]
        done.seconds_by_step["cabinets"] = round(time.monotonic() - started, 2)
        await import_banks(bank_items(cabinets, lambda c, _bank: c.cabinet_id in mine))

    await asyncio.gather(*(import_cabinets(part) for part in _chunks(plan, chunk)))
    # Module banks of cabinets registered before (a re-run): imported on their own (registered ones are skipped).
    await import_banks(bank_items(plan, lambda c, bank: bank in modules and c.cabinet_id not in created))
    done.cabinets_created = len(created)
    done.seconds_by_step["banks"] = round(time.monotonic() - started, 2)
    done.passwords_issued = len(passwords)

    started = time.monotonic()
    module_cabinet = {bank: c.cabinet_id for c in plan for bank, _ in c.banks.values() if bank in modules}
    unknown = [
        device
        for device in [*(c.cabinet_id for c in plan), *module_cabinet]
        if device not in passwords and not (known.get(device) or {}).get("password")
    ]
    # registered before, and the fleet file lost its password: a new one
    rotated = await asyncio.gather(*(post(f"/v1/admin/devices/{device}/credentials/rotate") for device in unknown))
    passwords.update({device: answer["password"] for device, answer in zip(unknown, rotated, strict=True)})
    done.rotated = len(unknown)
    done.seconds_by_step["rotate"] = round(time.monotonic() - started, 2)

    cabinets = [
        _fleet_cabinet(c, passwords[c.cabinet_id]) if c.cabinet_id in passwords else known[c.cabinet_id] for c in plan
    ]
    banks = [
        {"bank_id": bank, "password": passwords[bank], "cabinet_id": where} if bank in passwords else known[bank]
        for bank, where in module_cabinet.items()
    ]
    return cabinets, banks, done


def _fleet_cabinet(c: PlannedCabinet, password: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "cabinet_id": c.cabinet_id,
        "password": password,
        "lat": c.lat,
        "lon": c.lon,
        "slot_count": c.slot_count,
        "firmware": FIRMWARE,
        "slots": [
            {"slot": s, "bank_id": c.banks[s][0], "battery_pct": c.banks[s][1]}
            if s in c.banks
            else {"slot": s, "bank_id": None, "battery_pct": None}
            for s in range(1, c.slot_count + 1)
        ],
    }
    if c.protocol != "native":
        entry["protocol"] = c.protocol
    return entry


def read_known(path: Path) -> dict[str, dict[str, Any]]:
    """A previous fleet file's entries by device id (cabinets and bank modules); empty when there is none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    known = {c["cabinet_id"]: c for c in data.get("cabinets", []) if isinstance(c, dict) and c.get("cabinet_id")}
    known |= {b["bank_id"]: b for b in data.get("banks", []) if isinstance(b, dict) and b.get("bank_id")}
    return known


def write_fleet(
    path: Path, broker: dict[str, Any], cabinets: list[dict[str, Any]], banks: list[dict[str, Any]]
) -> None:
    """Atomically, mode 0600: it holds the devices' passwords."""
    fleet: dict[str, Any] = {"broker": broker, "cabinets": cabinets}
    if banks:
        fleet["banks"] = banks
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(fleet, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def broker_from_env() -> dict[str, Any]:
    broker: dict[str, Any] = {
        "host": os.environ.get("MQTT_HOST", "127.0.0.1"),
        "port": int(os.environ.get("MQTT_PORT", "1883")),
    }
    if os.environ.get("MQTT_CA_FILE"):
        broker["ca_file"] = os.environ["MQTT_CA_FILE"]
    return broker


def provision_for_bench(
    args: argparse.Namespace, *, stack: str, stack_tool: str, fleet_file: Path, skip: int
) -> dict[str, Any]:
    """The benchmark's provisioning step: skip + devices cabinets through device-svc's admin API (this module's
    command, as a process of its own: bulk imports; the emulator uses no device-svc code), or with
    --real-provisioning through `stack.py seed` (device-svc's own demo seed, at most 9,999 cabinets). Returns
    what details.json records of it."""
    total = skip + args.devices
    seed_args = ["--cabinets", str(total), "--slots", str(args.slots), "--seed", str(args.seed)]
    if args.banks > 0:
        seed_args += ["--bank-modules", str(args.banks)]
    if args.volinks > 0:
        seed_args += ["--volinks", str(args.volinks)]
    env = dict(os.environ)
    if args.real_provisioning:  # the bench's modules are the last banks, not the demo cabinets'
        last = ["--bank-modules-last"] if args.banks > 0 else []
        cmd = [sys.executable, stack_tool, "seed", "--stack", stack, "--", *seed_args, *last]
    else:
        cmd = [sys.executable, "-m", "device_emulator.bench.provision", *seed_args]
        cmd += ["--fleet-out", str(fleet_file)]
    say(
        f"provisioning {total} cabinets, {args.volinks} volinks cabinets, {args.banks} bank modules: "
        f"{' '.join(cmd[1:])}"
    )
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    took = time.monotonic() - start
    details = {
        "cabinets": total,
        "bank_modules": args.banks,
        "seconds": round(took, 2),
        "rc": done.returncode,
        "through": "stack.py seed" if args.real_provisioning else "admin API",
        "output": done.stdout.strip()[-300:],
    }
    say(f"provisioned in {took:.1f} s: {done.stdout.strip()[-300:]}")
    if done.returncode != 0:
        raise SystemExit(f"provisioning failed:\n{done.stdout}\n{done.stderr}")
    return details


async def _run(args: argparse.Namespace) -> int:
    env = os.environ
    start = time.monotonic()
    plan = plan_fleet(args.cabinets, args.slots, rng_seed=args.seed, volinks_cabinets=args.volinks)
    login = (env.get("PB_ADMIN_LOGIN", DEFAULT_ADMIN[0]), env.get("PB_ADMIN_PASSWORD", DEFAULT_ADMIN[1]))
    async with httpx.AsyncClient(timeout=args.timeout_s) as http:
        api = AdminApi(
            http,
            env.get("DEVICE_SVC_URL", "http://127.0.0.1:8002"),
            env.get("USER_SVC_URL", "http://127.0.0.1:8001"),
            login,
        )
        cabinets, banks, done = await provision(
            api,
            plan,
            bank_modules=args.bank_modules,
            known=read_known(args.fleet_out),
            chunk=args.chunk,
            parallel=args.parallel,
        )
    write_fleet(args.fleet_out, broker_from_env(), cabinets, banks)
    print(
        f"provisioned {len(plan)} cabinets through the admin API ({done.cabinets_created} new, {done.banks_created} "
        f"banks, {done.passwords_issued} passwords issued, {done.rotated} rotated, {len(banks)} bank modules) in "
        f"{done.requests} requests, {time.monotonic() - start:.1f} s; by step: {done.seconds_by_step}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_emulator.bench.provision")
    parser.add_argument("--cabinets", type=int, required=True)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--fleet-out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bank-modules", type=int, default=0, help="the last N banks get a module and credential")
    parser.add_argument("--volinks", type=int, default=0, help="also N volinks cabinets (VL-CAB-0001...)")
    parser.add_argument("--chunk", type=int, default=IMPORT_CHUNK, help="devices per import request")
    parser.add_argument("--parallel", type=int, default=PARALLEL_REQUESTS, help="import requests in flight at once")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
