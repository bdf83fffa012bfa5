"""SQL of the cabinet-screen playlist and what each cabinet was sent. Never commits."""

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.clock import datetime_to_ms
from device_svc.models import AdPlaylist, CabinetPlaylist
from device_svc.protocols.registry import NATIVE


async def store_if_newer(
    session: AsyncSession, slot: str, version: int, items: list[dict[str, Any]], at: datetime
) -> bool:
    """Keep the playlist unless a newer version is stored already (a late or repeated event changes nothing)."""
    stmt = (
        insert(AdPlaylist)
        .values(slot=slot, version=version, items=items, received_at=at)
        .on_conflict_do_update(
            index_elements=["slot"],
            set_={"version": version, "items": items, "received_at": at},
            where=AdPlaylist.version < version,
        )
        .returning(AdPlaylist.slot)
    )
    return (await session.execute(stmt)).first() is not None


async def current(session: AsyncSession, slot: str) -> AdPlaylist | None:
    return await session.get(AdPlaylist, slot)


_SCREENS = text(
    """
    SELECT id, lat, lon, region FROM cabinets
     WHERE state <> 'retired' AND protocol = :native
     ORDER BY id
    """
)


async def screens(session: AsyncSession) -> list[Any]:
    """Cabinets speaking the platform's protocol (a maker's protocol has no playlist), online or not: the
    broker keeps a retained playlist for an offline one until it connects."""
    return list((await session.execute(_SCREENS, {"native": NATIVE})).all())


_CLAIM = text(
    """
    INSERT INTO cabinet_playlists AS p (cabinet_id, version, digest, sent_at)
    SELECT c, :now_ms, d, :now FROM unnest(CAST(:cabinets AS varchar[]), CAST(:digests AS varchar[])) AS v(c, d)
     WHERE d <> :empty OR EXISTS (SELECT 1 FROM cabinet_playlists AS e WHERE e.cabinet_id = v.c)
    ON CONFLICT (cabinet_id) DO UPDATE
       SET version = GREATEST(p.version + 1, excluded.version), digest = excluded.digest, sent_at = :now
     WHERE p.digest <> excluded.digest
    RETURNING cabinet_id, version
    """
)


async def claim(session: AsyncSession, digests: dict[str, str], empty: str, now: datetime) -> dict[str, int]:
    """Take the cabinets whose part of the playlist changed since they were last sent (one writer per cabinet
    across replicas); cabinet id -> the version to send. A cabinet never sent anything is not sent an empty
    list (`empty` is its digest). Versions are the platform's clock in ms, and above the cabinet's previous
    one: they keep rising for the device across a restore of this database (the broker keeps the retained
    playlist with its version) and across replicas whose clocks differ a little."""
    if not digests:
        return {}
    params = {
        "cabinets": list(digests),
        "digests": list(digests.values()),
        "empty": empty,
        "now": now,
        "now_ms": datetime_to_ms(now),
    }
    return {row.cabinet_id: row.version for row in (await session.execute(_CLAIM, params)).all()}


async def forget(session: AsyncSession, cabinet_ids: list[str]) -> None:
    """Not sent after all (the broker was away): the next run sends them again."""
    if cabinet_ids:
        await session.execute(delete(CabinetPlaylist).where(CabinetPlaylist.cabinet_id.in_(cabinet_ids)))


async def sent(session: AsyncSession, cabinet_id: str) -> CabinetPlaylist | None:
    return (
        await session.execute(select(CabinetPlaylist).where(CabinetPlaylist.cabinet_id == cabinet_id))
    ).scalar_one_or_none()
