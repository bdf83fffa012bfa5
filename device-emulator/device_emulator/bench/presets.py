"""The benchmark's command line: its flags and the named runs of issue 9 (`--preset`), whose values flags given
as well override."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DESCRIPTION = (
    "The swarm benchmark: many cabinets (own MQTT connection and credentials each) sending telemetry while\n"
    "simulated users borrow and return through the public HTTP APIs; everything measured from the outside."
)

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
    p = argparse.ArgumentParser(prog="python -m device_emulator.bench", description=DESCRIPTION)
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
