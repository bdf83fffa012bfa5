"""The sidecar beside one broker: keeps the broker's password file equal to the registry's active devices.

It syncs at start, whenever channel ``device_credentials`` is notified (a burst of changes becomes one rewrite:
it waits `debounce_s` after the first), and every `resync_s` in any case (a missed notification, a lost
connection; the same write doubles as its liveness report). The file is rewritten, and the broker reloaded,
only when its content changed; the version applied is recorded either way."""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from device_svc.brokerauth import repository
from device_svc.certificates.repository import current_crl
from device_svc.provisioning.mosquitto import mosquitto_hash, reload_broker, render_password_file, write_atomically
from device_svc.provisioning.repository import active_broker_entries
from kit import pg_listen
from kit.db import make_sessionmaker, unit_of_work

log = logging.getLogger(__name__)

CHANNEL = "device_credentials"


@dataclass(frozen=True)
class BrokerPaths:
    password_file: Path
    pidfile: Path | None
    # run instead of signalling `pidfile` (a broker in a container: deploy/local/stacklib/containers.py)
    reload_command: tuple[str, ...] = ()
    # the broker's `crlfile` for the certificate listener (certificates/): the device CA's current CRL
    crl_file: Path | None = None


class BrokerAuthSidecar:
    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        files: BrokerPaths,
        *,
        broker_id: str,
        service_user: str,
        service_password: str,
        resync_s: float = 30.0,
        debounce_s: float = 0.05,
    ) -> None:
        self._sessionmaker = make_sessionmaker(engine)
        self._database_url = database_url
        self._files = files
        self.broker_id = broker_id
        # Hashed once: a fresh salt at every sync would make every sync a rewrite and a reload.
        self._service = (service_user, mosquitto_hash(service_password))
        self._resync_s = resync_s
        self._debounce_s = debounce_s
        self._written: str | None = None
        self._changed = asyncio.Event()
        self.applied = -1  # the credentials version last applied to the broker
        self.rewrites = 0

    async def sync_once(self) -> int:
        """Apply the registry to the broker; the version applied (-1 when the broker could not be reloaded)."""
        async with self._sessionmaker() as session:
            # Version and devices from one snapshot: the version recorded is exactly what the file holds.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            version = await repository.credentials_version(session)
            entries = await active_broker_entries(session)
            crl = await current_crl(session) if self._files.crl_file is not None else None
        entries[self._service[0]] = self._service[1]
        content = render_password_file(entries)
        path = self._files.password_file
        if self._written is None and path.exists():
            self._written = path.read_text(encoding="utf-8")  # a restarted sidecar rewrites only what changed
        crl_changed = (
            crl is not None and self._files.crl_file is not None and self._write_crl(self._files.crl_file, crl)
        )
        if content != self._written or crl_changed:
            write_atomically(path, content, mode=path.stat().st_mode & 0o777 if path.exists() else 0o600)
            if not await self._reload():
                log.warning("broker not reloaded: devices changed since the last reload are not yet known to it")
                return -1
            self._written = content
            self.rewrites += 1
            log.info("broker password file rewritten", extra={"version": version, "devices": len(entries) - 1})
        async with unit_of_work(self._sessionmaker) as session:
            await repository.record_sync(session, self.broker_id, version, len(entries) - 1, datetime.now(UTC))
        self.applied = version
        return version

    @staticmethod
    def _write_crl(path: Path, crl: str) -> bool:
        """Write the CRL when it differs from the file; whether it did (the broker must then reload)."""
        if path.exists() and path.read_text(encoding="utf-8") == crl:
            return False
        write_atomically(path, crl, mode=0o644)  # a CRL is public
        log.info("broker CRL rewritten")
        return True

    async def _reload(self) -> bool:
        command = self._files.reload_command
        if not command:
            return reload_broker(self._files.pidfile)
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.warning("broker reload command failed", extra={"rc": proc.returncode, "stderr": err.decode()[-300:]})
        return proc.returncode == 0

    async def run(self) -> None:
        listener = asyncio.create_task(
            pg_listen.listen(
                self._database_url,
                CHANNEL,
                lambda _payload: self._changed.set(),
                on_connected=self._changed.set,  # whatever changed while nobody listened
            )
        )
        try:
            while True:
                self._changed.clear()
                try:
                    await self.sync_once()
                except Exception:
                    log.exception("broker auth sync failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self._resync_s)
                await asyncio.sleep(self._debounce_s)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
