"""Ads. The app: `GET /v1/ads` (banners on air in the viewer's region, each labelled "advertisement"),
`POST /v1/ads/{id}/impressions` and `/clicks` (counted once per viewer, ad and day); cabinet screens' impressions
are the plays the cabinets report (ads/service.on_plays_reported). Staff
(`ads:manage`): `/v1/admin/ads` to create, list with counts, and withdraw; cabinet-screen changes reach the
cabinets through device-svc."""

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.regions import DivisionCode, division_at
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited, row_state
from kit.auth import CurrentUser, Principal, require_permission
from kit.db import ReadSessionDep, SessionDep
from kit.inputs import Latitude, Longitude
from notify_svc.ads import repository as repo
from notify_svc.ads import service
from notify_svc.ads.schemas import AdCounts, AdIn, AdList, AdOut, Counted, StaffAdList, StaffAdOut
from notify_svc.models import Ad, AdSlot

router = APIRouter(prefix="/v1/ads", tags=["ads"])
staff_router = APIRouter(prefix="/v1/admin/ads", tags=["ads (staff)"])

Manager = Annotated[Principal, Depends(require_permission("ads:manage"))]


def _out(ad: Ad) -> AdOut:
    return AdOut(
        ad_id=ad.id,
        slot=AdSlot(ad.slot),
        advertiser=ad.advertiser,
        title=ad.title,
        text=ad.text,
        media_url=ad.media_url,
        link_url=ad.link_url,
        display_s=ad.display_s,
        regions=list(ad.regions),
        starts_at=ad.starts_at,
        ends_at=ad.ends_at,
    )


async def _staff_out(session: AsyncSession, ads: list[Ad]) -> list[StaffAdOut]:
    counts = await repo.counts(session, [a.id for a in ads if a.slot == AdSlot.APP_BANNER])
    screens = await repo.screen_counts(session, [a.id for a in ads if a.slot == AdSlot.CABINET_SCREEN])
    return [
        StaffAdOut(
            **_out(ad).model_dump(),
            created_by=ad.created_by,
            created_at=ad.created_at,
            withdrawn_at=ad.withdrawn_at,
            counts=_counts(ad, counts, screens),
        )
        for ad in ads
    ]


def _counts(ad: Ad, counts: dict[uuid.UUID, dict[str, int]], screens: dict[uuid.UUID, tuple[int, int]]) -> AdCounts:
    if ad.slot == AdSlot.CABINET_SCREEN:
        plays, cabinets = screens.get(ad.id, (0, 0))
        return AdCounts(impressions=plays, clicks=0, screens=cabinets)
    return AdCounts(
        impressions=counts.get(ad.id, {}).get("impression", 0), clicks=counts.get(ad.id, {}).get("click", 0)
    )


@router.get("")
async def banners(
    _: CurrentUser,
    session: ReadSessionDep,
    region: Annotated[DivisionCode | None, Query(description="the viewer's division code")] = None,
    lat: Latitude | None = None,
    lon: Longitude | None = None,
) -> AdList:
    """App banners on air where you are (a division code, or a position); untargeted ones everywhere."""
    if region is None and lat is not None and lon is not None:
        found = division_at(lat, lon)
        region = found.code if found else None
    return AdList(items=[_out(ad) for ad in await service.banners(session, region, datetime.now(UTC))])


@router.post("/{ad_id}/impressions")
async def impression(ad_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Counted:
    """The app showed this banner to you."""
    ad, counted = await service.record(session, ad_id, "impression", user.user_id)
    return Counted(ad_id=ad.id, counted=counted)


@router.post("/{ad_id}/clicks")
async def click(ad_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Counted:
    """You tapped this banner: where it leads."""
    ad, counted = await service.record(session, ad_id, "click", user.user_id)
    return Counted(ad_id=ad.id, counted=counted, link_url=ad.link_url)


AD = row_state(Ad)


@staff_router.post("", status_code=201, dependencies=[audited("ad.create", "ad", state=AD)])
async def create(
    body: AdIn, staff: Manager, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> StaffAdOut:
    ad = await service.create(session, runtime, body, staff.subject)
    audit.note(target_id=ad.id)
    return (await _staff_out(session, [ad]))[0]


@staff_router.get("")
async def recent(
    _: Manager,
    session: ReadSessionDep,
    slot: AdSlot | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> StaffAdList:
    return StaffAdList(items=await _staff_out(session, list(await repo.recent(session, slot, limit))))


@staff_router.get("/{ad_id}")
async def one(ad_id: uuid.UUID, _: Manager, session: ReadSessionDep) -> StaffAdOut:
    return (await _staff_out(session, [await service.get(session, ad_id)]))[0]


@staff_router.post("/{ad_id}/withdraw", dependencies=[audited("ad.withdraw", "ad", "ad_id", state=AD)])
async def withdraw(ad_id: uuid.UUID, staff: Manager, session: SessionDep, runtime: RuntimeDep) -> StaffAdOut:
    ad = await service.withdraw(session, runtime, ad_id, staff.subject)
    return (await _staff_out(session, [ad]))[0]
