"""Ads in two slots. App banners: the app asks for the banners of its region and reports what it showed
and what was tapped; each viewer counts once a day per ad and kind. Cabinet screens: every change to
their ads publishes the whole playlist (every ad not yet ended, with its schedule and regions) as one
versioned event; device-svc, the only MQTT speaker, gives each cabinet the part for its region and the
cabinet plays each item within its schedule; cabinets report what they played (device.ad_plays.reported), counted
as the ad's impressions, once per report."""

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import AdPlaylistItem, AdPlaylistPublished, AdPlaysReported
from contracts.regions import targets
from kit.app import Runtime
from kit.errors import Conflict, NotFound
from notify_svc.ads import repository as repo
from notify_svc.ads.schemas import AdIn
from notify_svc.models import Ad, AdSlot

log = logging.getLogger(__name__)

PLAYLIST_LIMIT = 200  # ads not yet ended carried by one playlist event (device-svc sends each cabinet its part)


class AdNotFound(NotFound):
    code = "ad_not_found"
    title = "No such advertisement"


class AdNotRunning(Conflict):
    code = "ad_not_running"
    title = "This advertisement is not on air"


class AdWithdrawn(Conflict):
    code = "ad_withdrawn"
    title = "This advertisement is withdrawn already"


class NotAnAppBanner(Conflict):
    code = "not_an_app_banner"
    title = "Only app banners are counted by the app"


async def get(session: AsyncSession, ad_id: uuid.UUID, *, lock: bool = False) -> Ad:
    found = await repo.get(session, ad_id, lock=lock)
    if found is None:
        raise AdNotFound(f"No advertisement {ad_id}")
    return found


async def create(session: AsyncSession, runtime: Runtime, body: AdIn, by: str) -> Ad:
    ad = Ad(
        id=uuid.uuid4(),
        slot=body.slot.value,
        advertiser=body.advertiser,
        title=body.title,
        text=body.text,
        media_url=str(body.media_url) if body.media_url else None,
        link_url=str(body.link_url) if body.link_url else None,
        display_s=body.display_s,
        regions=list(body.regions),
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        created_by=by,
        created_at=datetime.now(UTC),
    )
    repo.add(session, ad)
    await session.flush()
    if ad.slot == AdSlot.CABINET_SCREEN:
        await publish_playlist(session, runtime)
    log.info("ad created", extra={"ad_id": str(ad.id), "slot": ad.slot, "by": by})
    return ad


async def withdraw(session: AsyncSession, runtime: Runtime, ad_id: uuid.UUID, by: str) -> Ad:
    ad = await get(session, ad_id, lock=True)
    if ad.withdrawn_at is not None:
        raise AdWithdrawn()
    ad.withdrawn_at, ad.withdrawn_by = datetime.now(UTC), by
    await session.flush()
    if ad.slot == AdSlot.CABINET_SCREEN:
        await publish_playlist(session, runtime)
    log.info("ad withdrawn", extra={"ad_id": str(ad.id), "slot": ad.slot, "by": by})
    return ad


async def banners(session: AsyncSession, division_code: str | None, now: datetime) -> list[Ad]:
    return [ad for ad in await repo.running(session, AdSlot.APP_BANNER, now) if targets(ad.regions, division_code)]


async def record(session: AsyncSession, ad_id: uuid.UUID, kind: str, viewer: uuid.UUID) -> tuple[Ad, bool]:
    """Count an impression or a click of an app banner on air, once per viewer and day."""
    ad = await get(session, ad_id)
    if ad.slot != AdSlot.APP_BANNER:
        raise NotAnAppBanner()
    now = datetime.now(UTC)
    if ad.withdrawn_at is not None or not ad.starts_at <= now < ad.ends_at:
        raise AdNotRunning()
    return ad, await repo.count(session, ad.id, kind, viewer, now.date(), now)


async def on_plays_reported(session: AsyncSession, envelope: Envelope) -> None:
    """A cabinet screen's play counts (device.ad_plays.reported) become the impressions of cabinet-screen ads,
    once per report and ad however often the report comes (a replayed MQTT message, a redelivered event). Ids
    that name no cabinet-screen ad (a device's mistake, or an ad of another system) are left out."""
    data = envelope.data
    assert isinstance(data, AdPlaysReported)
    plays: dict[uuid.UUID, int] = {}
    for item in data.items:
        try:
            ad_id = uuid.UUID(item.ad_id)
        except ValueError:
            continue
        plays[ad_id] = plays.get(ad_id, 0) + item.plays
    known = await repo.existing(session, AdSlot.CABINET_SCREEN, list(plays))
    rows = [
        {
            "cabinet_id": data.cabinet_id,
            "report_id": data.report_id,
            "ad_id": ad_id,
            "plays": n,
            "period_start": data.period_start,
            "period_end": data.period_end,
        }
        for ad_id, n in plays.items()
        if ad_id in known
    ]
    added = await repo.record_plays(session, rows)
    log.info(
        "screen plays counted",
        extra={"cabinet_id": data.cabinet_id, "report_id": data.report_id, "ads": len(rows), "new": added},
    )


def playlist_items(ads: Sequence[Ad]) -> list[AdPlaylistItem]:
    return [
        AdPlaylistItem(
            ad_id=ad.id,
            advertiser=ad.advertiser,
            title=ad.title,
            text=ad.text,
            media_url=ad.media_url,
            display_s=ad.display_s,
            regions=list(ad.regions),
            starts_at=ad.starts_at,
            ends_at=ad.ends_at,
        )
        for ad in ads
    ]


async def publish_playlist(session: AsyncSession, runtime: Runtime) -> AdPlaylistPublished:
    """The cabinet screens' whole playlist, in the transaction of the change that made it."""
    now = datetime.now(UTC)
    version = await repo.next_playlist_version(session, AdSlot.CABINET_SCREEN, int(now.timestamp() * 1000))
    ads = await repo.not_ended(session, AdSlot.CABINET_SCREEN, now, PLAYLIST_LIMIT)
    event = AdPlaylistPublished(slot=AdSlot.CABINET_SCREEN.value, version=version, items=playlist_items(ads), at=now)
    await runtime.publish(session, event, key=AdSlot.CABINET_SCREEN.value)
    return event
