"""A cabinet's firmware updates (protocol v1 `firmware_update`; docs/firmware.md): download the image from the
signed link, check its size, SHA-256 and the platform's Ed25519 signature with the public key the cabinet
carries, install, reboot (a real disconnect and reconnect, with a hello naming the new version), and report
every stage on the `firmware` channel. Faults for tests: `corrupt` (the download arrives altered: bad
checksum), `install` (the install fails: nothing changes), `boot` (the new firmware does not come up healthy:
the cabinet falls back to the old one and reports `rolled_back`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from contracts.mqtt import FirmwareError, FirmwareReport, FirmwareStage, FirmwareUpdate, firmware_signed_bytes

if TYPE_CHECKING:
    from device_emulator.cabinet import Cabinet

log = logging.getLogger("device_emulator.firmware")


class FirmwareFault(StrEnum):
    NONE = "none"
    CORRUPT = "corrupt"
    INSTALL = "install"
    BOOT = "boot"


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the firmware key must be an Ed25519 public key (PEM)")
    return key


class FirmwareUpdater:
    """One update at a time; a repeated `cmd_id` is answered with its last stage, never installed twice."""

    def __init__(self, cabinet: Cabinet, public_key: Ed25519PublicKey | None, *, step_s: float = 0.02) -> None:
        self._cabinet = cabinet
        self.public_key = public_key
        self.step_s = step_s  # the pause between stages (install time), short for tests
        self.fault = FirmwareFault.NONE
        self.http_verify: bool | str = True
        self._last: OrderedDict[str, FirmwareReport] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.reports: list[FirmwareReport] = []  # every report sent, for tests

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def handle(self, cmd: FirmwareUpdate) -> None:
        last = self._last.get(cmd.cmd_id)
        if last is not None:
            self._spawn(self._report(cmd, last.stage, error=last.error, running=last.running_version))
            return
        if self.busy:
            self._spawn(self._report(cmd, FirmwareStage.FAILED, error=FirmwareError.BUSY))
            return
        self._task = self._spawn(self._update(cmd))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Beside the cabinet's receive loop (a reboot ends that loop's connection); stopped with the cabinet."""
        task = asyncio.create_task(coro, name=f"firmware:{self._cabinet.cabinet_id}")
        self._cabinet._delayed.add(task)
        task.add_done_callback(self._cabinet._delayed.discard)
        return task

    async def _report(
        self,
        cmd: FirmwareUpdate,
        stage: FirmwareStage,
        *,
        error: FirmwareError | None = None,
        progress: int | None = None,
        running: str | None = None,
    ) -> None:
        cab = self._cabinet
        report = FirmwareReport(
            msg_id=cab.new_msg_id(),
            ts=cab.device_now_ms(),
            cmd_id=cmd.cmd_id,
            stage=stage,
            version=cmd.version,
            progress_pct=progress,
            error=error,
            running_version=running,
        )
        self._last[cmd.cmd_id] = report
        while len(self._last) > 64:
            self._last.popitem(last=False)
        self.reports.append(report)
        log.info(
            "firmware update",
            extra={"cabinet_id": cab.cabinet_id, "cmd_id": cmd.cmd_id, "stage": stage.value, "error": error},
        )
        await cab.publish_report(report)

    async def _download(self, url: str) -> bytes | None:
        try:
            async with httpx.AsyncClient(verify=self.http_verify, timeout=30.0) as client:
                answer = await client.get(url)
        except httpx.HTTPError as exc:
            log.warning("firmware download failed", extra={"cabinet_id": self._cabinet.cabinet_id, "error": str(exc)})
            return None
        if answer.status_code != 200:
            log.warning(
                "firmware download refused",
                extra={"cabinet_id": self._cabinet.cabinet_id, "status": answer.status_code, "body": answer.text[:200]},
            )
            return None
        return answer.content

    def _signed(self, cmd: FirmwareUpdate, digest: str) -> bool:
        if self.public_key is None:
            return False
        try:
            signature = base64.b64decode(cmd.signature, validate=True)
            self.public_key.verify(signature, firmware_signed_bytes(cmd.model, cmd.version, digest))
        except (InvalidSignature, ValueError):
            return False
        return True

    async def _update(self, cmd: FirmwareUpdate) -> None:
        cab = self._cabinet
        old = cab.firmware
        failed = FirmwareStage.FAILED
        if cab.device_now_ms() > cmd.expires_at:
            await self._report(cmd, failed, error=FirmwareError.EXPIRED, running=old)
            return
        if cmd.model != cab.model:
            await self._report(cmd, failed, error=FirmwareError.WRONG_MODEL, running=old)
            return
        await self._report(cmd, FirmwareStage.DOWNLOADING, progress=0)
        data = await self._download(cmd.url)
        if data is None:
            await self._report(cmd, failed, error=FirmwareError.DOWNLOAD_FAILED, running=old)
            return
        await self._report(cmd, FirmwareStage.DOWNLOADING, progress=100)
        if self.fault is FirmwareFault.CORRUPT and data:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        if len(data) != cmd.size:
            await self._report(cmd, failed, error=FirmwareError.BAD_SIZE, running=old)
            return
        digest = hashlib.sha256(data).hexdigest()
        if digest != cmd.sha256:
            await self._report(cmd, failed, error=FirmwareError.BAD_CHECKSUM, running=old)
            return
        if not self._signed(cmd, digest):
            await self._report(cmd, failed, error=FirmwareError.BAD_SIGNATURE, running=old)
            return
        await self._report(cmd, FirmwareStage.VERIFIED)
        await self._report(cmd, FirmwareStage.INSTALLING)
        await asyncio.sleep(self.step_s)
        if self.fault is FirmwareFault.INSTALL:
            await self._report(cmd, failed, error=FirmwareError.INSTALL_FAILED, running=old)
            return
        await self._report(cmd, FirmwareStage.REBOOTING)
        await cab.go_offline()
        healthy = self.fault is not FirmwareFault.BOOT
        if healthy:
            cab.firmware = cmd.version
        await asyncio.sleep(self.step_s)
        # A boot that is not healthy: the watchdog boots the old partition again (a second reboot).
        await cab.go_online()
        if healthy:
            await self._report(cmd, FirmwareStage.DONE, running=cmd.version)
        else:
            await self._report(cmd, FirmwareStage.ROLLED_BACK, error=FirmwareError.BOOT_FAILED, running=old)
