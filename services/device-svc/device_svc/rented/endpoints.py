"""The bank you rent: GET it (battery, and its position with your consent); give or withdraw the consent."""

from datetime import UTC, datetime

from fastapi import APIRouter

from device_svc.rented import service
from device_svc.rented.schemas import ConsentIn, ConsentOut, RentedBankOut
from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep

router = APIRouter(prefix="/v1/banks/rented-by-me", tags=["rented bank"], dependencies=[user_scope("rentals")])


@router.get("", response_model=RentedBankOut, responses={404: {"description": "no_rented_bank"}})
async def rented_bank(user: CurrentUser, session: ReadSessionDep) -> RentedBankOut:
    """The bank you are renting now, with its last known position and when it was reported (banks with their
    own module) if you consented to see it; nobody else is shown where a rented bank is."""
    return await service.rented_bank(session, user.user_id)


@router.get("/position-consent", response_model=ConsentOut)
async def position_consent(user: CurrentUser, session: ReadSessionDep) -> ConsentOut:
    return await service.get_consent(session, user.user_id)


@router.put("/position-consent", response_model=ConsentOut)
async def set_position_consent(body: ConsentIn, user: CurrentUser, session: SessionDep) -> ConsentOut:
    return await service.set_consent(session, user.user_id, body.granted, datetime.now(UTC))
