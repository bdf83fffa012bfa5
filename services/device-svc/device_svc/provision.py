"""Provisioning CLI.

    python -m device_svc.provision seed --cabinets 3 --slots 8 --fleet-out fleet.json [--seed 42] [--bank-modules N]
    python -m device_svc.provision sync-broker

Reads DATABASE_URL, MQTT_HOST, MQTT_PORT, MQTT_USERNAME and MQTT_PASSWORD from the environment (device-svc
settings). The database must be migrated. Without MQTT_PASSWORD_FILE, `seed` waits until the broker-auth
sidecar (python -m device_svc.brokerauth) applied the new devices; with it (a broker of one's own, no sidecar),
`seed` and `sync-broker` write that file and SIGHUP the pid in MQTT_BROKER_PIDFILE themselves.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from device_svc.provisioning.seed import BrokerTarget, seed, sync_broker
from device_svc.settings import Settings
from kit.db import make_engine, make_sessionmaker


def _broker(settings: Settings) -> BrokerTarget:
    return BrokerTarget(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        ca_file=settings.mqtt_ca_file,
        password_file=settings.mqtt_password_file,
        pidfile=settings.mqtt_broker_pidfile,
        service_user=settings.mqtt_username,
        service_password=settings.mqtt_password.get_secret_value(),
    )


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        sessionmaker = make_sessionmaker(engine)
        if args.command == "seed":
            result = await seed(
                sessionmaker,
                cabinets=args.cabinets,
                slots=args.slots,
                fleet_out=args.fleet_out,
                broker=_broker(settings),
                rng_seed=args.seed,
                bank_modules=args.bank_modules,
                bank_modules_last=args.bank_modules_last,
                volinks_cabinets=args.volinks,
            )
            print(
                f"seeded {args.cabinets} cabinets ({result.cabinets_created} new, "
                f"{result.passwords_generated} new passwords); fleet file {args.fleet_out}; "
                f"broker password file {'written' if result.broker_file_written else 'left to the broker-auth sidecar'}"
                f"{', broker reloaded' if result.broker_reloaded else ', broker NOT updated yet'}"
            )
        else:
            reloaded = await sync_broker(sessionmaker, _broker(settings))
            print(f"broker password file written{', broker reloaded' if reloaded else ''}")
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_svc.provision", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seed_cmd = sub.add_parser("seed", help="create the demo fleet (idempotent) and the broker password file")
    seed_cmd.add_argument("--cabinets", type=int, default=3, choices=range(1, 10000), metavar="N")
    seed_cmd.add_argument("--slots", type=int, default=8, choices=range(3, 257), metavar="N")
    seed_cmd.add_argument("--fleet-out", type=Path, required=True)
    seed_cmd.add_argument("--seed", type=int, default=42)
    seed_cmd.add_argument(
        "--bank-modules", type=int, default=0, metavar="N", help="the first N banks get their own module and credential"
    )
    seed_cmd.add_argument(
        "--bank-modules-last", action="store_true", help="give the modules to the last N banks instead (benchmarks)"
    )
    seed_cmd.add_argument(
        "--volinks",
        type=int,
        default=0,
        choices=range(0, 10000),
        metavar="N",
        help="also N cabinets of another maker speaking the volinks protocol (VL-CAB-0001..., banks VL-<sn>)",
    )
    sub.add_parser("sync-broker", help="rewrite the broker password file from the registry and reload it")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args, Settings()))


if __name__ == "__main__":
    sys.exit(main())
