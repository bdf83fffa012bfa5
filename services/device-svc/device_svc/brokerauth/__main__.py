"""`python -m device_svc.brokerauth [--once]`: the broker-auth sidecar (see the package's docstring).

Reads DATABASE_URL (device-svc's database), MQTT_PASSWORD_FILE, MQTT_BROKER_PIDFILE (or
MQTT_BROKER_RELOAD_COMMAND, run instead of a SIGHUP to that pid: a broker in a container), MQTT_USERNAME and
MQTT_PASSWORD (device-svc's own broker account, written into the file too), BROKER_ID (default: the host
name) and BROKER_AUTH_RESYNC_S."""

import argparse
import asyncio
import contextlib
import shlex
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from device_svc.brokerauth.sync import BrokerAuthSidecar, BrokerPaths
from kit.db import make_engine
from kit.logging import configure_logging


class BrokerAuthSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/pb_device"
    mqtt_password_file: Path
    mqtt_broker_pidfile: Path | None = None
    mqtt_broker_reload_command: str | None = None
    mqtt_crl_file: Path | None = None  # the certificate listener's crlfile (certificates/)
    mqtt_username: str = "device-svc"
    mqtt_password: SecretStr = SecretStr("dev-device-svc-password")
    broker_id: str = socket.gethostname()
    broker_auth_resync_s: float = 30.0
    log_level: str = "INFO"


async def _run(settings: BrokerAuthSettings, once: bool) -> int:
    engine = make_engine(settings.database_url, pool_size=2)
    sidecar = BrokerAuthSidecar(
        engine,
        settings.database_url,
        BrokerPaths(
            settings.mqtt_password_file,
            settings.mqtt_broker_pidfile,
            tuple(shlex.split(settings.mqtt_broker_reload_command or "")),
            settings.mqtt_crl_file,
        ),
        broker_id=settings.broker_id,
        service_user=settings.mqtt_username,
        service_password=settings.mqtt_password.get_secret_value(),
        resync_s=settings.broker_auth_resync_s,
    )
    try:
        if once:
            return 0 if await sidecar.sync_once() >= 0 else 1
        task = asyncio.create_task(sidecar.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_svc.brokerauth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="sync once and exit (1 when the broker was not reloaded)")
    args = parser.parse_args(argv)
    settings = BrokerAuthSettings()  # MQTT_PASSWORD_FILE comes from the environment
    configure_logging("broker-auth", settings.log_level)
    return asyncio.run(_run(settings, args.once))


if __name__ == "__main__":
    sys.exit(main())
