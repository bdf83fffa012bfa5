"""`python -m device_emulator run --fleet PATH`: run a fleet until SIGTERM/SIGINT, with the control API."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from device_emulator.aio import cancel_and_wait
from device_emulator.control import start_control_server
from device_emulator.fleet import Fleet
from device_emulator.logs import configure_logging
from device_emulator.scenario import Scenario, generate
from device_emulator.scenario import run as play

log = logging.getLogger("device_emulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m device_emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cabinets of a fleet.json until SIGTERM/SIGINT")
    run.add_argument("--fleet", required=True, help="fleet.json written by device-svc's seeder")
    run.add_argument("--control-host", default="127.0.0.1")
    run.add_argument(
        "--control-port",
        type=int,
        default=int(os.environ.get("EMULATOR_CONTROL_PORT", "8010")),
        help="default $EMULATOR_CONTROL_PORT or 8010; 0: the OS picks a free port (logged)",
    )
    run.add_argument("--broker-host", default=None, help="override the broker host of the fleet file")
    run.add_argument("--broker-port", type=int, default=None, help="override the broker port of the fleet file")
    run.add_argument(
        "--broker-ca-file", default=None, help="CA to verify the broker with (default: the fleet file's, $MQTT_CA_FILE)"
    )
    run.add_argument("--heartbeat-s", type=float, default=20.0)
    run.add_argument(
        "--firmware-key",
        type=lambda path: Path(path).read_bytes(),  # also applied to the default (argparse reads a str default)
        default=os.environ.get("FIRMWARE_PUBLIC_KEY_FILE"),
        help="the platform's public firmware key (PEM) the cabinets verify images with (docs/firmware.md)",
    )
    run.add_argument("--motor-delay-ms", type=int, default=30)
    run.add_argument("--stagger-ms", type=float, default=0.0, help="delay between cabinet starts")
    run.add_argument("--log-level", default="INFO")
    sc = sub.add_parser(
        "scenario", help="run a fleet, play a scenario (a JSON file, or one drawn from --seed), print what was done"
    )
    sc.add_argument("--fleet", required=True)
    sc.add_argument("--script", default=None, help="scenario JSON; without it one is generated from --seed")
    sc.add_argument("--seed", type=int, default=1)
    sc.add_argument("--duration-s", type=float, default=60.0)
    sc.add_argument("--events", type=int, default=20)
    sc.add_argument("--speed", type=float, default=1.0)
    sc.add_argument("--print-only", action="store_true", help="print the scenario and exit (no devices started)")
    sc.add_argument("--broker-host", default=None)
    sc.add_argument("--broker-port", type=int, default=None)
    sc.add_argument("--broker-ca-file", default=None)
    sc.add_argument("--heartbeat-s", type=float, default=20.0)
    sc.add_argument("--log-level", default="WARNING")
    return parser


def _load_plan(args: argparse.Namespace, fleet: Fleet) -> Scenario:
    if args.script:
        return Scenario.model_validate_json(Path(args.script).read_text(encoding="utf-8"))
    return generate(args.seed, list(fleet.cabinets), list(fleet.banks), duration_s=args.duration_s, events=args.events)


async def run_scenario(args: argparse.Namespace) -> int:
    fleet = Fleet.from_file(
        args.fleet,
        host=args.broker_host,
        port=args.broker_port,
        ca_file=args.broker_ca_file,
        heartbeat_s=args.heartbeat_s,
    )
    plan = _load_plan(args, fleet)
    if args.print_only:
        print(plan.model_dump_json(indent=2))
        return 0
    try:
        if not await fleet.start_all(timeout_s=30.0):
            log.warning("not every device came online", extra={"online": fleet.online_count})
        for record in await play(fleet, plan, speed=args.speed):
            print(json.dumps(record, default=str))
    finally:
        await fleet.stop_all()
    return 0


async def run_fleet(args: argparse.Namespace) -> int:
    fleet = Fleet.from_file(
        args.fleet,
        host=args.broker_host,
        port=args.broker_port,
        ca_file=args.broker_ca_file,
        heartbeat_s=args.heartbeat_s,
        motor_delay_s=args.motor_delay_ms / 1000,
        firmware_key=args.firmware_key,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    control = await start_control_server(fleet, args.control_host, args.control_port)
    try:
        await fleet.start_all(wait=False, stagger_s=args.stagger_ms / 1000)
        watcher = asyncio.create_task(_report_online(fleet))
        await stop.wait()
        log.info("shutting down", extra={"cabinets": len(fleet)})
        await cancel_and_wait(watcher)
    finally:
        await control.stop()
        await fleet.stop_all()
    log.info("stopped")
    return 0


async def _report_online(fleet: Fleet) -> None:
    if await fleet.wait_all_online(timeout_s=60.0):
        log.info("all cabinets online", extra={"cabinets": len(fleet)})
    else:
        log.warning("not all cabinets online after 60 s", extra={"cabinets": len(fleet), "online": fleet.online_count})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "run":
        return asyncio.run(run_fleet(args))
    if args.command == "scenario":
        return asyncio.run(run_scenario(args))
    return 2
