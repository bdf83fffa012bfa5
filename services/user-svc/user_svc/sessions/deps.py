from typing import Annotated
from uuid import UUID

from fastapi import Depends

from kit.auth import CurrentUser, Principal
from kit.db import SessionDep
from kit.errors import Unauthorized
from user_svc.errors import TokenRevoked
from user_svc.sessions import service


async def signed_in_user(principal: CurrentUser, session: SessionDep) -> Principal:
    """A user's access token that is valid, names a user and has not been revoked (logout, reuse)."""
    try:
        UUID(principal.subject)
    except ValueError:
        raise Unauthorized("The access token does not name a user") from None
    if await service.is_revoked(session, principal.token_id):
        raise TokenRevoked()
    return principal


SignedInUser = Annotated[Principal, Depends(signed_in_user)]
