"""Background jobs: fail eject commands past their deadline; mark silent cabinets offline."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import CabinetStatusChanged
from device_svc.commands.service import EjectService
from device_svc.mqtt.handlers import Publish
from device_svc.registry import repository as repo
from kit.db import unit_of_work

log = logging.getLogger(__name__)


async def deadline_sweeper(ejects: EjectService, interval_s: float) -> None:
    while True:
        try:
            while await ejects.sweep_deadlines() > 0:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deadline sweep failed")
        await asyncio.sleep(interval_s)


async def mark_offline(sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, offline_after_s: float) -> int:
    now = datetime.now(UTC)
    async with unit_of_work(sessionmaker) as session:
        rows = await repo.mark_stale_cabinets_offline(session, now - timedelta(seconds=offline_after_s))
        for row in rows:
            log.info(
                "cabinet silent; marked offline", extra={"device_id": row.id, "last_seen_at": str(row.last_seen_at)}
            )
            event = CabinetStatusChanged(cabinet_id=row.id, online=False, at=now, reason="no_message")
            await publish(session, event, row.id)
    return len(rows)


async def offline_sweeper(
    sessionmaker: async_sessionmaker[AsyncSession], publish: Publish, offline_after_s: float, interval_s: float
) -> None:
    while True:
        try:
            await mark_offline(sessionmaker, publish, offline_after_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("offline sweep failed")
        await asyncio.sleep(interval_s)
