"""The provisioning CLI: idempotent seed, a 0600 fleet file, and a broker password file that a
real Mosquitto accepts after SIGHUP (no restart)."""

import asyncio
import json
import os
import stat
import subprocess
import sys

import pytest

from device_svc.provisioning.mosquitto import verify_mosquitto_hash

pytestmark = pytest.mark.integration


def run_seed(database_url, broker, fleet_out):
    target = broker.target()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_CA_FILE": str(broker.ca_file),
        "MQTT_PASSWORD": target.service_password,
        "MQTT_PASSWORD_FILE": str(broker.password_file),
        "MQTT_BROKER_PIDFILE": str(broker.pidfile),
    }
    cmd = [sys.executable, "-m", "device_svc.provision", "seed", "--cabinets", "2", "--slots", "6"]
    cmd += ["--fleet-out", str(fleet_out), "--seed", "7"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_seed_cli_is_idempotent_and_the_broker_accepts_the_passwords(database_url, broker, tmp_path, truncate):
    await truncate(database_url)
    fleet_out = tmp_path / "fleet.json"
    out = run_seed(database_url, broker, fleet_out)
    assert "2 new" in out
    assert "broker reloaded" in out
    assert stat.S_IMODE(fleet_out.stat().st_mode) == 0o600
    fleet = json.loads(fleet_out.read_text())
    assert fleet["broker"] == {"host": broker.host, "port": broker.port, "ca_file": str(broker.ca_file)}
    assert [c["cabinet_id"] for c in fleet["cabinets"]] == ["CAB-0001", "CAB-0002"]
    cab1 = fleet["cabinets"][0]
    assert cab1["slot_count"] == 6
    assert [s["bank_id"] for s in cab1["slots"]] == [
        "PB-000001",
        "PB-000002",
        "PB-000003",
        "PB-000004",
        None,
        None,
    ]
    assert cab1["slots"][1]["battery_pct"] == 10
    assert all(60 <= s["battery_pct"] <= 100 for s in cab1["slots"] if s["bank_id"] not in (None, "PB-000002"))
    assert fleet["cabinets"][1]["slots"][0]["bank_id"] == "PB-000005"
    assert abs(cab1["lat"] - 22.54) < 0.01
    assert abs(cab1["lon"] - 114.05) < 0.01

    lines = dict(line.split(":", 1) for line in broker.password_file.read_text().splitlines())
    assert set(lines) == {"device-svc", "CAB-0001", "CAB-0002"}
    assert lines["CAB-0001"].startswith("$7$101$")
    assert verify_mosquitto_hash(cab1["password"], lines["CAB-0001"])
    assert cab1["password"] not in broker.password_file.read_text()
    await asyncio.sleep(0.3)
    assert await broker.accepts("CAB-0001", cab1["password"])
    assert not await broker.accepts("CAB-0001", cab1["password"] + "x")

    again = json.loads((lambda: (run_seed(database_url, broker, fleet_out), fleet_out.read_text())[1])())
    assert again == fleet  # same devices, same passwords, same banks
    await asyncio.sleep(0.3)
    assert await broker.accepts("CAB-0002", fleet["cabinets"][1]["password"])

    # A device missing from the fleet file gets a new password; the others keep theirs.
    trimmed = {**fleet, "cabinets": [fleet["cabinets"][0]]}
    fleet_out.write_text(json.dumps(trimmed))
    run_seed(database_url, broker, fleet_out)
    third = json.loads(fleet_out.read_text())
    assert third["cabinets"][0]["password"] == cab1["password"]
    assert third["cabinets"][1]["password"] != fleet["cabinets"][1]["password"]
    await asyncio.sleep(0.3)
    assert await broker.accepts("CAB-0002", third["cabinets"][1]["password"])
    assert not await broker.accepts("CAB-0002", fleet["cabinets"][1]["password"])
