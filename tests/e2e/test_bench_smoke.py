"""A seconds-long smoke run of the swarm benchmark (`make bench`) against the e2e mesh, to keep it working:
the three seeded cabinets are handed to the benchmark's swarm for the run, then back to the emulator.
No thresholds: the figures on a shared CI machine mean nothing; that the run completes and reports does."""

import json
from pathlib import Path

import pytest
from mesh import Mesh, new_user
from platform_client import wait_for

from device_emulator.bench.presets import parse_args
from device_emulator.bench.run import Bench

pytestmark = pytest.mark.e2e


async def test_bench_smoke_run_reports(mesh: Mesh, tmp_path: Path) -> None:
    devices = len(mesh.fleet)
    await mesh.fleet.stop_all()  # the swarm connects with the same credentials
    try:
        args = parse_args(
            [
                "--devices", str(devices), "--skip-devices", "0", "--no-provision", "--smoke", "--quiet",
                "--telemetry-rate", "20", "--unlock-rate", "1", "--duration", "4", "--hold-s", "0.3",
                "--drain-s", "3", "--users", "2", "--out", str(tmp_path),
            ]
        )  # fmt: skip
        summary = await Bench(args).run()
    finally:
        assert await mesh.fleet.start_all(timeout_s=30)
        api = await new_user(mesh, balance_fen=0)

        async def all_online() -> bool:
            cabinets = await api.cabinets()
            ids = {c.cabinet_id for c in mesh.fleet}
            return all(c["online"] for c in cabinets if c["id"] in ids)

        await wait_for(all_online, timeout_s=20)

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in (
        "unlock_p50_ms", "unlock_p99_ms", "billing_stop_p99_ms", "telemetry_msgs_per_s", "telemetry_lost",
        "devices_connected", "unlock_errors", "floor_mqtt_rtt_p50_ms", "floor_kafka_rtt_p50_ms",
    ):  # fmt: skip
        assert key in summary
    assert summary["devices_connected"] == devices
    assert summary["freshness_banks"] == 0  # no bank modules in this run: the keys are there, empty
    assert summary["freshness_oldest_position_s"] is None
    assert summary["telemetry_sent"] > 0
    assert summary["unlocks_ok"] + summary["unlock_errors"] > 0
    assert summary["floor_mqtt_rtt_p50_ms"] is not None
    for chart in ("latency", "throughput", "cpu"):
        assert (tmp_path / f"{chart}.svg").read_text().startswith("<svg")
    assert "Swarm benchmark" in (tmp_path / "index.md").read_text()
