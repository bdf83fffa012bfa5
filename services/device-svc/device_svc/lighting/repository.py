from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.models import Cabinet, UserLightRequest
from device_svc.protocols.registry import ADAPTERS, NATIVE


async def recent_requests(session: AsyncSession, user_id: UUID, since: datetime) -> tuple[int, datetime | None]:
    """How many light requests the user made since `since`, and the oldest of them."""
    stmt = select(func.count(), func.min(UserLightRequest.requested_at)).where(
        UserLightRequest.user_id == user_id, UserLightRequest.requested_at >= since
    )
    count, oldest = (await session.execute(stmt)).one()
    return int(count), oldest


def record_request(session: AsyncSession, user_id: UUID, cabinet_id: str, at: datetime) -> None:
    session.add(UserLightRequest(user_id=user_id, cabinet_id=cabinet_id, requested_at=at))


async def prune_requests(session: AsyncSession, before: datetime) -> None:
    await session.execute(text("DELETE FROM user_light_requests WHERE requested_at < :before"), {"before": before})


async def set_mode(session: AsyncSession, cabinet_id: str, mode: str) -> Cabinet | None:
    stmt = (
        update(Cabinet)
        .where(Cabinet.id == cabinet_id, Cabinet.state != "retired")
        .values(night_light=mode)
        .returning(Cabinet)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


_SCHEDULE_CANDIDATES = text(
    """
    SELECT id, lat, lon, night_light, light_on_until FROM cabinets
     WHERE online AND state = 'active' AND protocol = ANY(CAST(:protocols AS varchar[]))
       AND (night_light <> 'off' OR light_on_until > :now)
     ORDER BY id
    """
)


async def schedule_candidates(session: AsyncSession, now: datetime) -> list[Any]:
    """Online cabinets whose light may need a command: every one not switched off, and those switched off
    while a scheduled light still runs."""
    # Only cabinets whose protocol has a light command (protocols/).
    protocols = [NATIVE, *(name for name, adapter in ADAPTERS.items() if "light" in adapter.carries)]
    return list((await session.execute(_SCHEDULE_CANDIDATES, {"now": now, "protocols": protocols})).all())


_CLAIM_ON = text(
    """
    UPDATE cabinets AS c SET light_on_until = v.until
      FROM unnest(CAST(:ids AS varchar[]), CAST(:untils AS timestamptz[])) AS v(id, until)
     WHERE c.id = v.id AND (c.light_on_until IS NULL OR c.light_on_until < :refresh_before)
    RETURNING c.id, v.until
    """
)
_CLAIM_OFF = text(
    "UPDATE cabinets SET light_on_until = NULL WHERE id = ANY(CAST(:ids AS varchar[])) AND light_on_until > :now "
    "RETURNING id"
)


async def claim_light_on(
    session: AsyncSession, wanted: dict[str, datetime], refresh_before: datetime
) -> dict[str, datetime]:
    """Take the job of (re)lighting these cabinets until the given times: only those whose light would run
    out before `refresh_before`, and only once across replicas (the update decides)."""
    if not wanted:
        return {}
    ids = sorted(wanted)
    params = {"ids": ids, "untils": [wanted[i] for i in ids], "refresh_before": refresh_before}
    rows = await session.execute(_CLAIM_ON, params)
    return {r.id: r.until for r in rows.all()}


async def claim_light_off(session: AsyncSession, ids: list[str], now: datetime) -> list[str]:
    """The cabinets among `ids` whose scheduled light still runs: they get an "off" (once across replicas)."""
    if not ids:
        return []
    return [r.id for r in (await session.execute(_CLAIM_OFF, {"ids": sorted(ids), "now": now})).all()]


async def cabinet_and_distance(
    session: AsyncSession, cabinet_id: str, lat: float, lon: float
) -> tuple[Cabinet, float] | None:
    """A cabinet and how far (metres, great circle) the point is from it."""
    distance = func.earth_distance(func.ll_to_earth(lat, lon), func.ll_to_earth(Cabinet.lat, Cabinet.lon))
    row = (await session.execute(select(Cabinet, distance).where(Cabinet.id == cabinet_id))).first()
    return None if row is None else (row[0], float(row[1]))
