"""Provision a benchmark fleet through device-svc's own provisioning code (set-based; device passwords
hashed with a salted HMAC-SHA256, see device_svc.provisioning.credentials).

    python -m device_emulator.bench.provision --cabinets 20003 --slots 8 --fleet-out fleet.json [--seed 42]
        [--bank-modules N] [--volinks N]

`device_svc.provision seed` caps --cabinets at 9,999 (four-digit demo ids); this has no cap.

Reads DATABASE_URL, MQTT_* like `python -m device_svc.provision`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from device_svc.provisioning.seed import BrokerTarget, seed
from device_svc.settings import Settings
from kit.db import make_engine, make_sessionmaker


async def _run(args: argparse.Namespace) -> int:
    settings = Settings()
    engine = make_engine(settings.database_url, pool_size=2)
    start = time.monotonic()
    try:
        result = await seed(
            make_sessionmaker(engine),
            cabinets=args.cabinets,
            slots=args.slots,
            fleet_out=args.fleet_out,
            broker=BrokerTarget(
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                ca_file=settings.mqtt_ca_file,
                password_file=settings.mqtt_password_file,
                pidfile=settings.mqtt_broker_pidfile,
                service_user=settings.mqtt_username,
                service_password=settings.mqtt_password.get_secret_value(),
            ),
            rng_seed=args.seed,
            bank_modules=args.bank_modules,
            bank_modules_last=args.bank_modules_last,
            volinks_cabinets=args.volinks,
        )
    finally:
        await engine.dispose()
    print(
        f"seeded {args.cabinets} cabinets ({result.cabinets_created} new, {result.passwords_generated} new "
        f"passwords, {len(result.fleet.get('banks', []))} bank modules) in {time.monotonic() - start:.1f} s; "
        f"broker reloaded: {result.broker_reloaded}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_emulator.bench.provision")
    parser.add_argument("--cabinets", type=int, required=True)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--fleet-out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bank-modules", type=int, default=0, help="the first N banks get a module and credential")
    parser.add_argument(
        "--bank-modules-last", action="store_true", help="the last N banks instead (the benchmark: not the demo's)"
    )
    parser.add_argument("--volinks", type=int, default=0, help="also N volinks cabinets (VL-CAB-0001...)")
    parser.add_argument("--real-hash-cost", action="store_true", help="ignored: there is one hash cost now")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
