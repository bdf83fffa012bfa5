from fastapi import APIRouter, status

from kit.app import RuntimeDep
from kit.auth import CurrentUser
from kit.db import SessionDep
from kit.errors import Unauthorized
from user_svc.context import ContextDep
from user_svc.users import service
from user_svc.users.schemas import RegisteredUserOut, RegisterUserIn, UserProfileOut

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def register_user(
    body: RegisterUserIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> RegisteredUserOut:
    user = await service.register(session, body, terms=context.terms, passwords=context.passwords, events=runtime)
    return RegisteredUserOut(
        user_id=user.id, phone=user.phone, display_name=user.display_name, registered_at=user.registered_at
    )


@router.get("/me")
async def my_profile(principal: CurrentUser, session: SessionDep) -> UserProfileOut:
    try:
        user_id = principal.user_id
    except ValueError:
        raise Unauthorized("The access token does not name a user") from None
    user = await service.profile(session, user_id)
    return UserProfileOut(
        user_id=user.id,
        phone=user.phone,
        display_name=user.display_name,
        status=user.status,
        registered_at=user.registered_at,
        terms_version=user.terms_version,
        terms_accepted_at=user.terms_accepted_at,
    )
