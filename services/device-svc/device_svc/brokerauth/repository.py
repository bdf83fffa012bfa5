"""broker_auth_version and broker_auth_syncs (migration 0015)."""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import BrokerAuthSync, BrokerAuthVersion


async def credentials_version(session: AsyncSession) -> int:
    """The count of committed changes to the broker's view of credentials, as this transaction sees it
    (its own change included once flushed: the trigger runs at the statement)."""
    return int((await session.execute(select(func.coalesce(func.max(BrokerAuthVersion.version), 0)))).scalar_one())


async def record_sync(session: AsyncSession, broker_id: str, version: int, devices: int, at: datetime) -> None:
    stmt = insert(BrokerAuthSync).values(broker_id=broker_id, version=version, devices=devices, synced_at=at)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[BrokerAuthSync.broker_id],
            set_={"version": stmt.excluded.version, "devices": stmt.excluded.devices, "synced_at": at},
        )
    )


async def live_syncs(session: AsyncSession, since: datetime) -> list[tuple[str, int]]:
    """(broker id, version applied) of every broker whose sidecar reported since `since`."""
    rows = await session.execute(
        select(BrokerAuthSync.broker_id, BrokerAuthSync.version).where(BrokerAuthSync.synced_at >= since)
    )
    return [(broker_id, version) for broker_id, version in rows.all()]


async def all_syncs(session: AsyncSession) -> list[BrokerAuthSync]:
    return list((await session.execute(select(BrokerAuthSync).order_by(BrokerAuthSync.broker_id))).scalars())
