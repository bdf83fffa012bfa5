from fastapi import APIRouter, Request, Response, status

from kit.app import RuntimeDep
from kit.db import SessionDep
from kit.errors import problem
from kit.ratelimit import rate_class
from user_svc.auth import service
from user_svc.auth.schemas import (
    AdminLoginIn,
    AdminSessionOut,
    LoginIn,
    LogoutIn,
    RefreshIn,
    SmsLoginIn,
    UserSessionOut,
)
from user_svc.codes.endpoints import client_address
from user_svc.context import ContextDep, UserServiceContext
from user_svc.errors import RefreshTokenReused
from user_svc.sessions import service as sessions
from user_svc.sessions.deps import SignedInUser
from user_svc.sessions.service import IssuedSession
from user_svc.staff import service as staff

router = APIRouter(tags=["sessions"])


def _out(issued: IssuedSession, accepted_terms: str | None, context: UserServiceContext) -> UserSessionOut:
    outdated = accepted_terms is not None and accepted_terms != context.terms.version
    return UserSessionOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
        user_id=issued.user_id,
        terms_update_required=outdated,
        current_terms_version=context.terms.version,
    )


@router.post("/v1/sessions", dependencies=[rate_class("login")])
async def create_user_session(
    body: LoginIn,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    runtime: RuntimeDep,
    response: Response,
) -> UserSessionOut:
    """Log in with phone, e-mail or user name and password."""
    response.headers["Cache-Control"] = "no-store"  # tokens must not be cached (RFC 6749 5.1)
    result = await service.login_user(
        session,
        runtime.sessionmaker,
        login=body.login,
        password=body.password,
        passwords=context.passwords,
        tokens=context.tokens,
        settings=context.settings,
        client_ip=client_address(request),
    )
    return _out(result.session, result.terms_version, context)


@router.post("/v1/sessions/sms", dependencies=[rate_class("login")])
async def create_user_session_by_code(
    body: SmsLoginIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep, response: Response
) -> UserSessionOut:
    """Log in with a code from `POST /v1/sms-codes` (purpose `login`)."""
    response.headers["Cache-Control"] = "no-store"
    result = await service.login_user_by_code(
        session,
        runtime.sessionmaker,
        phone=body.phone,
        code=body.code,
        tokens=context.tokens,
        settings=context.settings,
    )
    return _out(result.session, result.terms_version, context)


@router.post("/v1/sessions/refresh", response_model=UserSessionOut, responses={401: {"description": "invalid"}})
async def refresh_user_session(
    body: RefreshIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep, response: Response
) -> UserSessionOut | Response:
    """Trade a refresh token for a new access token and a new refresh token (the old one is spent).
    Presenting a spent refresh token again ends its whole family (`refresh_token_reused`)."""
    response.headers["Cache-Control"] = "no-store"
    issued = await sessions.rotate(
        session, refresh_token=body.refresh_token, tokens=context.tokens, settings=context.settings, events=runtime
    )
    if issued is None:
        # Answered, not raised: the revocation must commit with this request.
        reused = RefreshTokenReused()
        return problem(reused.status, reused.code, reused.title, reused.detail, reused.headers)
    return _out(issued, None, context)


@router.post("/v1/sessions/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    body: LogoutIn, principal: SignedInUser, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """End this session: revokes the refresh token's family and this access token."""
    await sessions.logout(
        session,
        user_id=principal.user_id,
        access_jti=principal.token_id,
        refresh_token=body.refresh_token,
        settings=context.settings,
        events=runtime,
    )


@router.post("/v1/admin/sessions", dependencies=[rate_class("login")])
async def create_admin_session(
    body: AdminLoginIn,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    runtime: RuntimeDep,
    response: Response,
) -> AdminSessionOut:
    """Staff sign-in: password, plus `totp_code` once a second factor is enrolled (401 `totp_required`
    without it). While `pending` is not empty the token has no roles (see `/v1/admin/me`)."""
    response.headers["Cache-Control"] = "no-store"  # tokens must not be cached (RFC 6749 5.1)
    result = await service.login_admin(
        session,
        runtime.sessionmaker,
        login=body.login,
        password=body.password,
        passwords=context.passwords,
        tokens=context.tokens,
        settings=context.settings,
        totp=context.totp,
        totp_code=body.totp_code,
        client_ip=client_address(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    return AdminSessionOut(
        access_token=result.token.access_token,
        expires_in=result.token.expires_in,
        admin_id=result.admin_id,
        roles=result.roles,
        session_id=result.session_id,
        pending=result.pending,
        refresh_token=result.refresh_token,
        refresh_expires_in=result.refresh_expires_in,
    )


@router.post(
    "/v1/admin/sessions/refresh",
    response_model=AdminSessionOut,
    responses={401: {"description": "invalid, expired, revoked or reused"}},
)
async def refresh_admin_session(
    body: RefreshIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep, response: Response
) -> AdminSessionOut | Response:
    """A staff session's refresh token for a new access token and a new refresh token (the old one is
    spent). Presenting a spent one again revokes the session (`refresh_token_reused`); so does any
    revocation of the session (sign-out, role change, disable, password or factor reset)."""
    response.headers["Cache-Control"] = "no-store"
    refreshed = await staff.refresh_session(
        session, body.refresh_token, tokens=context.tokens, settings=context.settings, events=runtime
    )
    if refreshed is None:
        reused = RefreshTokenReused()  # answered, not raised: the revocation commits with this request
        return problem(reused.status, reused.code, reused.title, reused.detail, reused.headers)
    return AdminSessionOut(
        access_token=refreshed.session.token.access_token,
        expires_in=refreshed.session.token.expires_in,
        admin_id=refreshed.admin_id,
        roles=refreshed.roles,
        session_id=refreshed.session.session_id,
        refresh_token=refreshed.session.refresh_token,
        refresh_expires_in=refreshed.session.refresh_expires_in,
    )
