from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from device_svc.models import Cabinet, FirmwareImage, FirmwareRollout, FirmwareUpdate


async def image_exists(session: AsyncSession, model: str, version: str) -> bool:
    stmt = select(FirmwareImage.id).where(FirmwareImage.model == model, FirmwareImage.version == version)
    return (await session.execute(stmt)).first() is not None


async def add_image(session: AsyncSession, image: FirmwareImage) -> bool:
    """False when (model, version) is taken (a concurrent upload won)."""
    values = {
        c.name: getattr(image, c.key) for c in FirmwareImage.__table__.columns if getattr(image, c.key) is not None
    }
    stmt = insert(FirmwareImage).values(**values).on_conflict_do_nothing().returning(FirmwareImage.id)
    return (await session.execute(stmt)).first() is not None


async def get_image(session: AsyncSession, image_id: UUID) -> FirmwareImage | None:
    """The image's record without its bytes (those are read only to serve a download)."""
    stmt = select(FirmwareImage).options(defer(FirmwareImage.data)).where(FirmwareImage.id == image_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def image_bytes(session: AsyncSession, image_id: UUID) -> bytes | None:
    return (await session.execute(select(FirmwareImage.data).where(FirmwareImage.id == image_id))).scalar_one_or_none()


async def list_images(session: AsyncSession, limit: int) -> list[FirmwareImage]:
    stmt = select(FirmwareImage).options(defer(FirmwareImage.data)).order_by(FirmwareImage.created_at.desc())
    return list((await session.execute(stmt.limit(limit))).scalars().all())


async def model_cabinets(session: AsyncSession, model: str) -> list[Any]:
    """The cabinets of a model that can take an update (in service, speaking the platform's protocol)."""
    stmt = select(Cabinet.id, Cabinet.lat, Cabinet.lon, Cabinet.region).where(
        Cabinet.model == model, Cabinet.state != "retired", Cabinet.protocol == "native"
    )
    return list((await session.execute(stmt)).all())


def add_rollout(
    session: AsyncSession, rollout: FirmwareRollout, cabinets: list[tuple[int, str]], now: datetime
) -> None:
    session.add(rollout)
    for seq, cabinet_id in cabinets:
        session.add(
            FirmwareUpdate(rollout_id=rollout.id, cabinet_id=cabinet_id, seq=seq, state="pending", updated_at=now)
        )


async def get_rollout(
    session: AsyncSession, rollout_id: UUID, *, for_update: bool = False, skip_locked: bool = False
) -> FirmwareRollout | None:
    stmt = select(FirmwareRollout).where(FirmwareRollout.id == rollout_id)
    if for_update:
        stmt = stmt.with_for_update(skip_locked=skip_locked).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_rollouts(session: AsyncSession, limit: int) -> list[FirmwareRollout]:
    stmt = select(FirmwareRollout).order_by(FirmwareRollout.created_at.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars().all())


async def open_rollout_ids(session: AsyncSession) -> list[UUID]:
    stmt = select(FirmwareRollout.id).where(FirmwareRollout.state.in_(("running", "paused", "halted")))
    return list((await session.execute(stmt.order_by(FirmwareRollout.created_at))).scalars().all())


async def counts(session: AsyncSession, rollout_ids: list[UUID]) -> dict[UUID, dict[str, int]]:
    if not rollout_ids:
        return {}
    stmt = (
        select(FirmwareUpdate.rollout_id, FirmwareUpdate.state, func.count())
        .where(FirmwareUpdate.rollout_id.in_(rollout_ids))
        .group_by(FirmwareUpdate.rollout_id, FirmwareUpdate.state)
    )
    out: dict[UUID, dict[str, int]] = {r: {} for r in rollout_ids}
    for rollout_id, state, count in (await session.execute(stmt)).all():
        out[rollout_id][state] = int(count)
    return out


async def updates_of(session: AsyncSession, rollout_id: UUID, limit: int) -> list[FirmwareUpdate]:
    stmt = (
        select(FirmwareUpdate)
        .where(FirmwareUpdate.rollout_id == rollout_id)
        .order_by(FirmwareUpdate.seq, FirmwareUpdate.cabinet_id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


async def update_by_cmd(session: AsyncSession, cabinet_id: str, cmd_id: str, *, lock: bool) -> FirmwareUpdate | None:
    stmt = select(FirmwareUpdate).where(FirmwareUpdate.cmd_id == cmd_id, FirmwareUpdate.cabinet_id == cabinet_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalar_one_or_none()


async def overdue_updates(session: AsyncSession, rollout_id: UUID, now: datetime) -> list[FirmwareUpdate]:
    stmt = (
        select(FirmwareUpdate)
        .where(
            FirmwareUpdate.rollout_id == rollout_id,
            FirmwareUpdate.state.in_(("sent", "downloading", "verified", "installing", "rebooting")),
            FirmwareUpdate.deadline_at < now,
        )
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars().all())


_STARTABLE = text(
    """
    SELECT u.cabinet_id, c.firmware FROM firmware_updates u JOIN cabinets c ON c.id = u.cabinet_id
     WHERE u.rollout_id = :rollout_id AND u.state = 'pending' AND c.online AND c.state = 'active'
       AND NOT EXISTS (
           SELECT 1 FROM firmware_updates o
            WHERE o.cabinet_id = u.cabinet_id
              AND o.state IN ('sent', 'downloading', 'verified', 'installing', 'rebooting'))
       AND NOT EXISTS (SELECT 1 FROM commands k WHERE k.status = 'sent' AND k.cabinet_id = u.cabinet_id)
     ORDER BY u.seq, u.cabinet_id
     LIMIT :limit
     FOR UPDATE OF u SKIP LOCKED
    """
)


async def startable(session: AsyncSession, rollout_id: UUID, limit: int) -> list[Any]:
    """Pending cabinets of the rollout that can start now, in the rollout's order: online, in service, no other
    update running, and no eject waiting for its answer (a reboot must not leave a bank half out)."""
    if limit <= 0:
        return []
    return list((await session.execute(_STARTABLE, {"rollout_id": rollout_id, "limit": limit})).all())


async def mark_sent(
    session: AsyncSession,
    rollout_id: UUID,
    cabinet_id: str,
    state: str,
    *,
    cmd_id: str,
    from_version: str | None,
    now: datetime,
    deadline: datetime,
) -> None:
    await session.execute(
        update(FirmwareUpdate)
        .where(FirmwareUpdate.rollout_id == rollout_id, FirmwareUpdate.cabinet_id == cabinet_id)
        .values(
            state=state, cmd_id=cmd_id, from_version=from_version, sent_at=now, deadline_at=deadline, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )


async def move_all(session: AsyncSession, rollout_id: UUID, from_state: str, to_state: str, now: datetime) -> int:
    """Every update of the rollout in `from_state` to `to_state` (one transition of the table, in bulk)."""
    result = await session.execute(
        text(
            "UPDATE firmware_updates SET state = :to_state, updated_at = :now "
            "WHERE rollout_id = :rollout_id AND state = :from_state"
        ),
        {"rollout_id": rollout_id, "now": now, "from_state": from_state, "to_state": to_state},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
