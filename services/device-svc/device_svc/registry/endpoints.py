"""Public registry API: cabinets (map list and detail) and banks, for users and administrators."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from device_svc.registry import service
from device_svc.registry.schemas import BankOut, CabinetDetailOut, CabinetList
from device_svc.settings import Settings
from kit.app import RuntimeDep
from kit.auth import CurrentPrincipal, Principal, user_scope
from kit.db import SessionDep
from kit.errors import Forbidden

router = APIRouter(prefix="/v1", tags=["registry"], dependencies=[user_scope("map")])

DeviceIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


async def viewer(principal: CurrentPrincipal) -> Principal:
    """A signed-in user, or an administrator / operator token."""
    if principal.kind == "user" or (principal.kind == "admin" and principal.can("devices:read")):
        return principal
    raise Forbidden("A user or administrator token is required")


Viewer = Annotated[Principal, Depends(viewer)]


def min_battery(runtime: RuntimeDep) -> int:
    settings = runtime.settings
    return settings.min_rent_battery_pct if isinstance(settings, Settings) else 20


@router.get("/cabinets", response_model=CabinetList)
async def list_cabinets(
    _: Viewer,
    session: SessionDep,
    runtime: RuntimeDep,
    after: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> CabinetList:
    """Cabinets by id, a page at a time: `next_after` (the page's last id) asks for the next page; null on
    the last one (issue 15: no answer reads a whole table)."""
    items = await service.list_cabinets(session, min_battery(runtime), after, limit)
    return CabinetList(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/cabinets/{cabinet_id}", response_model=CabinetDetailOut)
async def get_cabinet(
    cabinet_id: DeviceIdPath, _: Viewer, session: SessionDep, runtime: RuntimeDep
) -> CabinetDetailOut:
    return await service.get_cabinet(session, cabinet_id, min_battery(runtime))


@router.get("/banks/{bank_id}", response_model=BankOut)
async def get_bank(bank_id: DeviceIdPath, _: Viewer, session: SessionDep) -> BankOut:
    return await service.get_bank(session, bank_id)
