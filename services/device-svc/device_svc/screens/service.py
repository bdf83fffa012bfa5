"""The cabinet screens' playlist. notify-svc owns the ads and publishes the whole playlist after each change
(`notify.ad_playlist.published`, versioned); device-svc keeps the newest and gives each cabinet the items
aimed at its region that have not ended, as one retained `playlist` command: the broker hands it to the
cabinet now or on its next connect, and a cabinet without a screen ignores it. A cabinet is sent again only
when its part changed (a new ad in its region, one withdrawn or ended), so a change in Beijing sends
nothing to Shenzhen. Screens report what they played (`plays`): each report becomes one
`device.ad_plays.reported` event, which notify-svc counts as the ads' impressions."""

import asyncio
import hashlib
import json
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import AdPlayCount, AdPlaylistItem, AdPlaylistPublished, AdPlaysReported
from contracts.mqtt import MAX_PAYLOAD_BYTES, Playlist, PlaylistItem, PlayReport
from contracts.regions import region_at, targets
from device_svc.clock import checked_device_time, datetime_to_ms
from device_svc.metrics import COMMANDS_DOWN
from device_svc.mqtt.downlink import Downlink
from device_svc.screens import repository as repo
from kit.db import after_commit, unit_of_work
from kit.periodic import Alarm

log = logging.getLogger(__name__)

SLOT = "cabinet_screen"
MAX_ITEMS = 16  # the protocol's longest playlist (contracts.mqtt.Playlist)


async def on_playlist_published(session: AsyncSession, envelope: Envelope, alarm: Alarm) -> None:
    data = envelope.data
    assert isinstance(data, AdPlaylistPublished)
    items = [i.model_dump(mode="json") for i in data.items]
    if await repo.store_if_newer(session, data.slot, data.version, items, datetime.now(UTC)):
        after_commit(session, lambda: alarm.ring_at(datetime.now(UTC)))
        log.info("ad playlist received", extra={"version": data.version, "items": len(items)})
    else:
        log.info("older ad playlist dropped", extra={"version": data.version})


def items_for(playlist: list[AdPlaylistItem], division_code: str | None, now: datetime) -> list[PlaylistItem]:
    """A cabinet's part: items aimed at its region that have not ended, soonest first, as many as fit."""
    chosen = [i for i in playlist if i.ends_at > now and targets(list(i.regions), division_code)]
    chosen.sort(key=lambda i: (i.starts_at, str(i.ad_id)))
    return [
        PlaylistItem(
            ad_id=str(i.ad_id),
            advertiser=i.advertiser,
            title=i.title,
            text=i.text,
            media_url=i.media_url,
            display_s=i.display_s,
            starts_at=datetime_to_ms(i.starts_at),
            ends_at=datetime_to_ms(i.ends_at),
        )
        for i in chosen[:MAX_ITEMS]
    ]


def digest(items: list[PlaylistItem]) -> str:
    return hashlib.sha256(json.dumps([i.model_dump(mode="json") for i in items]).encode()).hexdigest()


def fit(message: Playlist) -> Playlist:
    """Drop the last items until the command fits the protocol's payload limit (bytes: Chinese text is three
    bytes a character)."""
    while len(message.model_dump_json().encode()) > MAX_PAYLOAD_BYTES and message.items:
        message = message.model_copy(update={"items": message.items[:-1]})
    return message


async def sync(sessionmaker: async_sessionmaker[AsyncSession], downlink: Downlink, now: datetime) -> int:
    """Send every cabinet whose part of the playlist changed since it was last sent; returns how many were
    sent. Cabinets are claimed in the database (replicas send each once); one not sent is released."""
    async with unit_of_work(sessionmaker) as session:
        stored = await repo.current(session, SLOT)
        if stored is None:
            return 0
        playlist = [AdPlaylistItem.model_validate(i) for i in stored.items]
        parts: dict[str, list[PlaylistItem]] = {}
        for cabinet in await repo.screens(session):
            division = region_at(cabinet.lat, cabinet.lon, cabinet.region or None).division_code
            parts[cabinet.id] = items_for(playlist, division, now)
        claimed = await repo.claim(session, {c: digest(items) for c, items in parts.items()}, digest([]), now)
    limit = asyncio.Semaphore(50)
    failed: list[str] = []

    async def send(cabinet_id: str, version: int) -> None:
        message = fit(Playlist(version=version, issued_at=datetime_to_ms(now), items=parts[cabinet_id]))
        async with limit:
            try:
                await downlink.send(cabinet_id, message, retain=True)
                COMMANDS_DOWN.labels("playlist", "sent").inc()
            except Exception as exc:
                failed.append(cabinet_id)
                COMMANDS_DOWN.labels("playlist", "not_sent").inc()
                log.warning("playlist not sent", extra={"device_id": cabinet_id, "error": repr(exc)})

    await asyncio.gather(*(send(c, v) for c, v in claimed.items()))
    if failed:
        async with unit_of_work(sessionmaker) as session:
            await repo.forget(session, failed)
    if claimed:
        log.info("cabinet playlists sent", extra={"sent": len(claimed) - len(failed), "not_sent": len(failed)})
    return len(claimed) - len(failed)


def plays_reported(
    cabinet_id: str, msg: PlayReport, received_at: datetime, *, max_skew_s: float
) -> AdPlaysReported | None:
    """A cabinet's `plays` report as the event notify-svc counts impressions from (the report's msg_id names it,
    so a replay is counted once there too). The period is the device's, each end checked against our clock
    (a clock in the future or in 1970 gets the receive time); None for a period that ends before it starts."""
    end, _ = checked_device_time(msg.ts, received_at, not_before=None, max_skew_s=max_skew_s)
    start, _ = checked_device_time(msg.from_ts, received_at, not_before=None, max_skew_s=max_skew_s)
    if msg.from_ts > msg.ts:
        return None
    return AdPlaysReported(
        cabinet_id=cabinet_id,
        report_id=msg.msg_id,
        playlist_version=msg.playlist_version,
        period_start=min(start, end),
        period_end=end,
        items=[AdPlayCount(ad_id=i.ad_id, plays=i.plays) for i in msg.items],
        at=received_at,
    )
