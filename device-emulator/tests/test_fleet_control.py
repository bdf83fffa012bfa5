"""Fleet from fleet.json, the control API over real HTTP, and the CLI process end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from contracts.mqtt import EjectResultCode, ReturnAckResult, UpChannel
from device_emulator import Fleet
from device_emulator.control import start_control_server

pytestmark = pytest.mark.asyncio


async def test_fleet_from_file(tmp_path, broker, new_cabinet_id, write_fleet):
    ids = [new_cabinet_id(), new_cabinet_id()]
    fleet = Fleet.from_file(write_fleet(tmp_path / "fleet.json", ids), heartbeat_s=5)
    assert len(fleet) == 2
    assert ids[0] in fleet
    cab = fleet[ids[0]]
    assert (cab.host, cab.port, cab.firmware, cab.slot_count, cab.heartbeat_s) == (
        broker.host,
        broker.port,
        "seed-1.2",
        8,
        5,
    )
    assert [s.slot for s in cab.inventory()] == list(range(1, 9))
    assert fleet.get("NOPE") is None
    loc = fleet.find_bank(f"PB-{ids[1]}-2")
    assert loc is not None
    assert (loc.cabinet_id, loc.state, loc.slot, loc.battery_pct) == (ids[1], "in_slot", 2, 60)
    assert fleet.find_bank("PB-UNKNOWN") is None
    try:
        assert await fleet.start_all(timeout_s=5)
        assert fleet.online_count == 2
    finally:
        await fleet.stop_all()
    assert fleet.online_count == 0


async def test_control_api_over_http(tmp_path, new_cabinet_id, svc_session, write_fleet):
    ids = [new_cabinet_id(), new_cabinet_id()]
    a, b = ids
    fleet = Fleet.from_file(write_fleet(tmp_path / "fleet.json", ids), backoff_initial_s=0.05)
    control = await start_control_server(fleet, "127.0.0.1", 0)
    try:
        assert control.port > 0
        async with svc_session() as svc, httpx.AsyncClient(base_url=control.url, timeout=10) as http:
            assert await fleet.start_all(timeout_s=5)
            r = await http.get("/livez")
            assert r.status_code == 200
            assert r.json()["online"] == 2

            listed = (await http.get("/cabinets")).json()["cabinets"]
            assert {c["cabinet_id"] for c in listed} == set(ids)
            assert all(c["online"] for c in listed)
            one = (await http.get(f"/cabinets/{a}")).json()
            assert one["slots"][0] == {
                "slot": 1,
                "bank_id": f"PB-{a}-1",
                "battery_pct": 95,
                "locked": True,
                "charging": False,
                "fault": None,
            }
            assert (await http.get("/cabinets/NOPE")).status_code == 404

            # rent at A (device-svc ejects), return at B through the API; device-svc acks
            await svc.eject(a, "cmd-api-1", bank_id=f"PB-{a}-1")
            assert (await svc.wait_for(a, UpChannel.EJECT_RESULT))[0].msg.result is EjectResultCode.OK
            bank = (await http.get(f"/banks/PB-{a}-1")).json()
            assert (bank["state"], bank["cabinet_id"], bank["slot"]) == ("out", a, None)

            svc.auto_ack = ReturnAckResult.OK
            r = await http.post(f"/cabinets/{b}/return", json={"bank_id": f"PB-{a}-1", "battery_pct": 77, "repeat": 2})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ack"] == {"v": 1, "type": "return_ack", "ref_msg_id": body["msg_id"], "result": "ok"}
            assert (body["slot"], body["queued"]) == (3, False)
            reports = await svc.wait_for(b, UpChannel.RETURN, count=2)
            assert {x.msg.msg_id for x in reports} == {body["msg_id"]}
            bank = (await http.get(f"/banks/PB-{a}-1")).json()
            assert bank == {"bank_id": f"PB-{a}-1", "cabinet_id": b, "state": "in_slot", "slot": 3, "battery_pct": 77}
            assert (await http.get("/banks/PB-NEVER")).status_code == 404

            r = await http.post(f"/cabinets/{b}/return", json={"bank_id": "PB-Z", "slot": 1})
            assert r.status_code == 409
            r = await http.post(f"/cabinets/{b}/return", json={"bank_id": "bad id!"})
            assert r.status_code == 422

            # faults
            r = await http.post(f"/cabinets/{a}/faults", json={"stuck_motor": True, "clock_skew_ms": 1234})
            assert r.status_code == 200
            assert r.json()["faults"] == {
                "stuck_motor": True,
                "drop_acks": False,
                "silent": False,
                "drop_messages": False,
                "duplicate": 1,
                "delay_s": 0.0,
            }
            r = await http.post(f"/cabinets/{a}/faults", json={"duplicate": 2, "delay_s": 0.5})
            assert (r.json()["faults"]["duplicate"], r.json()["faults"]["delay_s"]) == (2, 0.5)
            r = await http.post(f"/cabinets/{a}/faults", json={"duplicate": 1, "delay_s": 0})
            assert r.status_code == 200
            assert r.json()["clock_skew_ms"] == 1234
            await svc.eject(a, "cmd-api-2", bank_id=f"PB-{a}-2")
            result = (await svc.wait_for(a, UpChannel.EJECT_RESULT, lambda m: m.cmd_id == "cmd-api-2"))[0].msg
            assert result.result is EjectResultCode.MOTOR_FAULT
            detail = (await http.get(f"/cabinets/{a}")).json()
            assert [x["result"] for x in detail["recent_results"]] == ["ok", "motor_fault"]

            # offline (last will) and back online
            r = await http.post(f"/cabinets/{a}/offline")
            assert r.status_code == 200
            assert r.json()["online"] is False
            await svc.wait_for(a, UpChannel.STATUS, lambda m: not m.online)
            r = await http.post(f"/cabinets/{a}/return", json={"bank_id": "PB-LATE"})
            assert r.json()["queued"] is True
            assert r.json()["ack"] is None
            r = await http.post(f"/cabinets/{a}/online")
            assert r.json()["online"] is True
            await svc.wait_for(a, UpChannel.HELLO, count=2)
            await svc.wait_for(a, UpChannel.RETURN, lambda m: m.bank_id == "PB-LATE")
    finally:
        await control.stop()
        await fleet.stop_all()


async def test_cli_runs_until_sigterm(tmp_path, new_cabinet_id, svc_session, write_fleet):
    ids = [new_cabinet_id(), new_cabinet_id()]
    fleet_file = write_fleet(tmp_path / "fleet.json", ids)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device_emulator",
        "run",
        "--fleet",
        str(fleet_file),
        "--control-port",
        "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[dict] = []
    try:
        async with asyncio.timeout(15):
            while not any(x["msg"] == "all cabinets online" for x in lines):
                raw = await proc.stdout.readline()
                assert raw, "emulator exited early"
                lines.append(json.loads(raw))  # every stdout line is a JSON object
        port = next(x["port"] for x in lines if x["msg"] == "control api listening")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert (await http.get("/livez")).json()["online"] == 2
            listed = (await http.get("/cabinets")).json()["cabinets"]
            assert sorted(c["cabinet_id"] for c in listed) == sorted(ids)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest, _ = await proc.communicate()
        assert proc.returncode == 0
        tail = [json.loads(x) for x in rest.decode().splitlines() if x.strip()]
        assert tail[-1]["msg"] == "stopped"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # a clean shutdown leaves every cabinet's retained presence at offline
    async with svc_session() as svc:
        for cab_id in ids:
            got = (await svc.wait_for(cab_id, UpChannel.STATUS))[0]
            assert (got.retain, got.msg.online) == (True, False)
