"""A short telemetry-ingestion benchmark of one device-svc, in-process, on the test stack.

    python3 deploy/local/stack.py exec --stack test -- .venv/bin/python -m device_svc.ingest_bench \
        [--messages 6000] [--cabinets 40] [--bank-modules 200] [--broker-inflight 1000] \
        [--cpu-of postgres=<postmaster pid> --cpu-of tansu=<pid>]
    ... -m device_svc.ingest_bench --storm --cabinets 2000 --bank-modules 0

`--storm`: a connect storm instead (what a broker restart causes): every cabinet sends its retained
`status` online, a `hello` and an `inventory` (its slots as seeded); timed until every cabinet is shown
online and every hello and inventory is recorded. Prints messages per second and the process's CPU
per message (device-svc and the load publisher share the process: an upper bound for device-svc).
Its private Mosquitto's CPU over the same window is counted too, and that of every `--cpu-of` process tree
(the stack's PostgreSQL postmaster and tansu: `ss -ltnp` names their pids): `all_cpu_ms_per_message` is
the device path's whole cost per message on this machine (only fair on a stack nothing else uses).

Starts a private Mosquitto (password file, ACL), a database of its own (`pb_test_device_bench`,
recreated), seeds a fleet, runs device-svc (real lifespan: MQTT, Kafka outbox relay), then publishes
one warm-up round (a message per device, so that every device is online before the window), then
`--messages` heartbeats and bank reports (device times increasing per device) as the service
account, as fast as the broker takes them, and times until device-svc has recorded every one
(`inbound_messages`; a batch commits only after Kafka acknowledged its telemetry events, which go
straight to Kafka, not through the outbox). Prints reports per second.
"""

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text

from contracts.mqtt import UpChannel, up_topic
from device_svc.main import create_app
from device_svc.provisioning.mosquitto import mosquitto_hash, write_password_file
from device_svc.provisioning.seed import BrokerTarget, seed
from device_svc.settings import Settings
from kit.db import make_engine, make_sessionmaker
from kit.mqtt_client import LiteClient
from kit.testing import app_client, ensure_database, kafka_bootstrap, migrate, test_database_url, write_keypair

SERVICE_DIR = Path(__file__).resolve().parents[1]
SERVICE_PASSWORD = "bench-" + uuid.uuid4().hex[:8]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_broker(directory: Path, max_inflight: int) -> tuple[subprocess.Popen[bytes], BrokerTarget]:
    port = _free_port()
    password_file = directory / "passwd"
    write_password_file(password_file, {"device-svc": mosquitto_hash(SERVICE_PASSWORD)})
    (directory / "acl").write_text(
        "user device-svc\ntopic readwrite pb/v1/devices/#\n"
        "pattern write pb/v1/devices/%u/up/#\npattern read pb/v1/devices/%u/cmd/#\n"
    )
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nper_listener_settings false\nlistener {port} 127.0.0.1\n"
        f"allow_anonymous false\npassword_file {password_file}\nacl_file {directory / 'acl'}\n"
        "set_tcp_nodelay true\nmax_queued_messages 200000\npersistence false\n"
        # As deployed: device-svc acks after commit, so this bounds what it can have in hand.
        f"max_inflight_messages {max_inflight}\n"
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (directory / "mosquitto.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("mosquitto did not start")
        time.sleep(0.05)
    target = BrokerTarget("127.0.0.1", port, password_file, directory / "mosquitto.pid", "device-svc", SERVICE_PASSWORD)
    return process, target


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and its live descendants (their own and their reaped children's), from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                raw = (entry / "stat").read_text()
                f = raw[raw.rindex(")") + 2 :].split()
                stats[int(entry.name)] = (int(f[1]), sum(int(x) for x in f[11:15]) / _TICK)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo += [child for child, (ppid, _) in stats.items() if ppid == pid]
    return total


def parts_cpu_s(parts: dict[str, int]) -> dict[str, float]:
    return {name: tree_cpu_s(pid) for name, pid in parts.items()}


def plan(devices: list[tuple[str, str]], count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """`count` (topic, payload) pairs: cabinets heartbeat; banks mostly report, sometimes heartbeat."""
    base = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    seq: dict[str, int] = {}
    out = []
    for n in range(count):
        device_id, kind = devices[n % len(devices)]
        k = seq[device_id] = seq.get(device_id, 0) + 1
        ts = base + k * 10
        msg: dict[str, object]
        if kind == "bank" and k % 4:
            msg = {
                "type": "bank_report",
                "battery_pct": rng.randint(20, 100),
                "position": {"lat": 22.54 + rng.uniform(-0.01, 0.01), "lon": 114.05 + rng.uniform(-0.01, 0.01)},
                "temperature_c": 25.0,
                "charge_cycles": 10,
                "health_pct": 98,
            }
        else:
            msg = {"type": "heartbeat", "rssi_dbm": rng.randint(-100, -50)}
        msg |= {"v": 1, "msg_id": f"b-{device_id}-{k}", "ts": ts}
        out.append((up_topic(device_id, UpChannel(str(msg["type"]))), json.dumps(msg).encode()))
    return out


def storm_plan(fleet: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Per cabinet: status online, hello (full inventory), inventory; device times one second apart."""
    ts = int(datetime.now(UTC).timestamp() * 1000) - 10_000
    status = json.dumps({"type": "status", "v": 1, "online": True}).encode()
    out = []
    for cabinet in fleet["cabinets"]:
        cid = cabinet["cabinet_id"]
        slots = [
            {"slot": s["slot"], "bank_id": s["bank_id"], "battery_pct": s["battery_pct"]} for s in cabinet["slots"]
        ]
        hello = {"type": "hello", "firmware": cabinet["firmware"], "slot_count": cabinet["slot_count"]}
        inventory = {"type": "inventory"}
        out.append((up_topic(cid, UpChannel.STATUS), status))
        for n, msg in enumerate((hello, inventory)):
            body = msg | {"v": 1, "msg_id": f"s-{cid}-{n}", "ts": ts + n * 1000, "slots": slots}
            out.append((up_topic(cid, UpChannel(str(msg["type"]))), json.dumps(body).encode()))
    return out


async def count(engine_url: str, sql: str) -> int:
    engine = make_engine(engine_url, 1)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> None:
    url = test_database_url("device").rsplit("/", 1)[0] + "/pb_test_device_bench"
    await ensure_database(url, recreate=True)
    migrate(SERVICE_DIR, url)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        directory = Path(tmp)
        process, broker = start_broker(directory, args.broker_inflight)
        try:
            engine = make_engine(url, 2)
            try:
                result = await seed(
                    make_sessionmaker(engine),
                    cabinets=args.cabinets,
                    slots=8,
                    fleet_out=directory / "fleet.json",
                    broker=broker,
                    bank_modules=args.bank_modules,
                )
            finally:
                await engine.dispose()
            devices = [(c["cabinet_id"], "cabinet") for c in result.fleet["cabinets"]]
            devices += [(b["bank_id"], "bank") for b in result.fleet.get("banks", [])]
            if args.storm:
                messages = storm_plan(result.fleet)
                recorded_target = 2 * len(result.fleet["cabinets"])  # hellos + inventories (status: no msg_id)
                warmup = []
                finished_sql = "SELECT count(*) FROM inbound_messages WHERE (SELECT bool_and(online) FROM cabinets)"
            else:
                # The first round (one message per device) is the warm-up: it brings every device online
                # (presence events) before the measured window, which then sees a fleet in its steady state.
                messages = plan(devices, args.messages + len(devices), random.Random(args.seed))
                warmup, messages = messages[: len(devices)], messages[len(devices) :]
                recorded_target = len(messages) + len(warmup)
                finished_sql = "SELECT count(*) FROM inbound_messages"
            settings = Settings(
                pb_env="test",
                database_url=url,
                kafka_bootstrap=kafka_bootstrap(),
                kafka_consumer_group=f"ingest-bench-{uuid.uuid4().hex[:6]}",
                jwt_public_key_file=write_keypair(directory / "keys")[1],
                mqtt_host=broker.host,
                mqtt_port=broker.port,
                mqtt_password=SecretStr(SERVICE_PASSWORD),
                mqtt_client_id=f"device-svc-bench-{uuid.uuid4().hex[:6]}",
                mqtt_clean_session=True,
                # Its private broker listens in clear text; the stack's MQTT_CA_FILE is for the stack's broker.
                mqtt_ca_file=None,
                offline_after_s=600,
            )
            async with app_client(create_app(settings)) as client:
                for _ in range(300):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                # The load comes through the kit's small client, so that the process's CPU is mostly device-svc's.
                load = LiteClient(f"bench-load-{uuid.uuid4().hex[:6]}")
                await load.connect(broker.host, broker.port, username="device-svc", password=SERVICE_PASSWORD)
                if not args.storm:
                    for i in range(0, len(warmup), 400):
                        await asyncio.gather(*(load.publish_nowait(t, p, qos=1) for t, p in warmup[i : i + 400]))
                    for _ in range(int(args.timeout_s * 4)):
                        if await count(url, finished_sql) >= len(warmup):
                            break
                        await asyncio.sleep(0.25)
                parts = {"mosquitto": process.pid, **dict(args.cpu_of)}
                try:
                    parts_started = parts_cpu_s(parts)
                    started = time.monotonic()
                    cpu_started = time.process_time()
                    window = 400
                    for i in range(0, len(messages), window):
                        await asyncio.gather(*(load.publish_nowait(t, p, qos=1) for t, p in messages[i : i + window]))
                    published = time.monotonic() - started
                    done = 0
                    deadline = started + args.timeout_s
                    while time.monotonic() < deadline:
                        done = await count(url, finished_sql)
                        if done >= recorded_target:
                            break
                        await asyncio.sleep(0.25)
                    elapsed = time.monotonic() - started
                    cpu_s = time.process_time() - cpu_started
                    parts_s = {k: v - parts_started[k] for k, v in parts_cpu_s(parts).items()}
                finally:
                    load.disconnect()
                online = await count(url, "SELECT count(*) FROM cabinets WHERE online")
            print(
                json.dumps(
                    {
                        "mode": "storm" if args.storm else "telemetry",
                        "messages": len(messages),
                        "broker_inflight": args.broker_inflight,
                        "devices": len(devices),
                        "warmup": len(warmup),
                        "recorded": done,
                        "publish_s": round(published, 2),
                        "ingest_s": round(elapsed, 2),
                        "cabinets_online": online,
                        "messages_per_s": round(len(messages) / elapsed, 1) if done >= recorded_target else None,
                        "reports_per_s": round((done - len(warmup)) / elapsed, 1),
                        "process_cpu_ms_per_message": round(cpu_s * 1000 / len(messages), 3),
                        # the broker and each --cpu-of part over the same window (their whole process trees)
                        "parts_cpu_ms_per_message": {k: round(v * 1000 / len(messages), 3) for k, v in parts_s.items()},
                        "all_cpu_ms_per_message": round((cpu_s + sum(parts_s.values())) * 1000 / len(messages), 3),
                    }
                )
            )
        finally:
            process.terminate()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m device_svc.ingest_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--cabinets", type=int, default=40)
    parser.add_argument("--bank-modules", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--storm", action="store_true", help="a connect storm: status + hello + inventory per cabinet")
    parser.add_argument(
        "--cpu-of",
        type=lambda v: (v.split("=", 1)[0], int(v.split("=", 1)[1])),
        action="append",
        default=[],
        metavar="NAME=PID",
        help="also count this process tree's CPU over the window (e.g. postgres=<postmaster pid>, tansu=<pid>)",
    )
    parser.add_argument(
        "--broker-inflight", type=int, default=1000, help="the broker's max_inflight_messages (Mosquitto's default: 20)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
