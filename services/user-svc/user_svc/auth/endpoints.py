from fastapi import APIRouter, Response

from kit.db import SessionDep
from user_svc.auth import service
from user_svc.auth.schemas import AdminSessionOut, LoginIn, UserSessionOut
from user_svc.context import ContextDep

router = APIRouter(tags=["sessions"])


@router.post("/v1/sessions")
async def create_user_session(
    body: LoginIn, session: SessionDep, context: ContextDep, response: Response
) -> UserSessionOut:
    response.headers["Cache-Control"] = "no-store"  # tokens must not be cached (RFC 6749 5.1)
    result = await service.login_user(
        session, login=body.login, password=body.password, passwords=context.passwords, tokens=context.tokens
    )
    return UserSessionOut(
        access_token=result.token.access_token, expires_in=result.token.expires_in, user_id=result.user_id
    )


@router.post("/v1/admin/sessions")
async def create_admin_session(
    body: LoginIn, session: SessionDep, context: ContextDep, response: Response
) -> AdminSessionOut:
    response.headers["Cache-Control"] = "no-store"  # tokens must not be cached (RFC 6749 5.1)
    result = await service.login_admin(
        session, login=body.login, password=body.password, passwords=context.passwords, tokens=context.tokens
    )
    return AdminSessionOut(
        access_token=result.token.access_token,
        expires_in=result.token.expires_in,
        admin_id=result.admin_id,
        roles=[result.role],
    )
