"""Staff accounts: `/v1/admin/admins/*` for administrators with `admins:manage` (every change audited),
`/v1/admin/me/*` for any signed-in administrator, restricted sessions included (change the password,
enrol the second factor, see and end one's own sessions)."""

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, status

from kit.app import RuntimeDep
from kit.auth import CurrentPrincipal, Principal
from kit.db import SessionDep
from kit.errors import Forbidden
from user_svc.admins.endpoints import AdminManager, admin_with
from user_svc.admins.schemas import ReasonIn, Role
from user_svc.context import ContextDep
from user_svc.errors import TokenRevoked
from user_svc.models import Admin, AdminSession
from user_svc.sessions import service as sessions
from user_svc.settings import Settings
from user_svc.staff import service
from user_svc.staff.schemas import (
    MeOut,
    OwnPasswordIn,
    RoleIn,
    StaffEntryOut,
    StaffOut,
    StaffSessionOut,
    TemporaryPasswordOut,
    TotpCodeIn,
    TotpEnrolmentOut,
)

router = APIRouter(prefix="/v1/admin", tags=["staff accounts"])


async def signed_in_admin(principal: CurrentPrincipal, session: SessionDep) -> Principal:
    """Any administrator's own session, a restricted one too (it holds no permission)."""
    if principal.kind != "admin" or principal.delegated:
        raise Forbidden("An administrator's session is required")
    if await sessions.is_revoked(session, principal.token_id):
        raise TokenRevoked()
    return principal


Myself = Annotated[Principal, Depends(signed_in_admin)]
# Dispatchers assign maintenance tasks to staff: they see who is there (login and role), nothing more.
Dispatcher = Annotated[Principal, Depends(admin_with("maintenance:dispatch"))]


def _staff(admin: Admin, settings: Settings) -> StaffOut:
    return StaffOut(
        admin_id=admin.id,
        login=admin.login,
        role=admin.role,
        status=admin.status,
        must_change_password=admin.must_change_password,
        totp_enabled=admin.totp_secret is not None,
        totp_required=service.totp_required_for(admin.role, settings),
        created_at=admin.created_at,
        updated_at=admin.updated_at,
        last_login_at=admin.last_login_at,
    )


def _session(row: AdminSession, current_token: str = "") -> StaffSessionOut:
    return StaffSessionOut(
        session_id=row.id,
        restricted=row.restricted,
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
        current=row.token_id == current_token,
    )


@router.get("/admins")
async def list_admins(
    _: AdminManager,
    session: SessionDep,
    context: ContextDep,
    admin_status: Annotated[Literal["active", "disabled"] | None, Query(alias="status")] = None,
    role: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[StaffOut]:
    admins = await service.search(session, status=admin_status, role=role, limit=limit, offset=offset)
    return [_staff(a, context.settings) for a in admins]


@router.get("/staff-directory")
async def staff_directory(
    _: Dispatcher,
    session: SessionDep,
    role: Annotated[list[Role] | None, Query(max_length=6)] = None,
) -> list[StaffEntryOut]:
    """Active staff (login and role only), by login: whom a task can be assigned to."""
    admins = await service.directory(session, roles=list(role or []))
    return [StaffEntryOut(admin_id=a.id, login=a.login, role=a.role) for a in admins]


@router.get("/admins/{admin_id}")
async def view_admin(_: AdminManager, admin_id: UUID, session: SessionDep, context: ContextDep) -> StaffOut:
    return _staff(await service.get(session, admin_id), context.settings)


@router.put("/admins/{admin_id}/role")
async def change_role(
    actor: AdminManager, admin_id: UUID, body: RoleIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> StaffOut:
    """Sessions of the administrator end (their tokens carry the old role)."""
    admin = await service.change_role(
        session, actor, admin_id, role=body.role, reason=body.reason, settings=context.settings, events=runtime
    )
    return _staff(admin, context.settings)


@router.post("/admins/{admin_id}/disable")
async def disable_admin(
    actor: AdminManager, admin_id: UUID, body: ReasonIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> StaffOut:
    admin = await service.set_enabled(
        session, actor, admin_id, enabled=False, reason=body.reason, settings=context.settings, events=runtime
    )
    return _staff(admin, context.settings)


@router.post("/admins/{admin_id}/enable")
async def enable_admin(
    actor: AdminManager, admin_id: UUID, body: ReasonIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> StaffOut:
    admin = await service.set_enabled(
        session, actor, admin_id, enabled=True, reason=body.reason, settings=context.settings, events=runtime
    )
    return _staff(admin, context.settings)


@router.post("/admins/{admin_id}/password-reset")
async def reset_password(
    actor: AdminManager,
    admin_id: UUID,
    body: ReasonIn,
    session: SessionDep,
    context: ContextDep,
    runtime: RuntimeDep,
    response: Response,
) -> TemporaryPasswordOut:
    """A one-time password, shown once; the administrator must change it at the next sign-in."""
    response.headers["Cache-Control"] = "no-store"
    temporary = await service.reset_password(
        session,
        actor,
        admin_id,
        reason=body.reason,
        passwords=context.passwords,
        settings=context.settings,
        events=runtime,
    )
    return TemporaryPasswordOut(admin_id=admin_id, temporary_password=temporary)


@router.post("/admins/{admin_id}/totp-reset")
async def reset_totp(
    actor: AdminManager, admin_id: UUID, body: ReasonIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> StaffOut:
    admin = await service.reset_totp(
        session, actor, admin_id, reason=body.reason, settings=context.settings, events=runtime
    )
    return _staff(admin, context.settings)


@router.get("/admins/{admin_id}/sessions")
async def admin_sessions(_: AdminManager, admin_id: UUID, session: SessionDep) -> list[StaffSessionOut]:
    """Sign-ins not yet expired, newest first, revoked ones included."""
    return [_session(row) for row in await service.list_sessions(session, admin_id)]


@router.delete("/admins/{admin_id}/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_admin_session(
    actor: AdminManager,
    admin_id: UUID,
    session_id: UUID,
    session: SessionDep,
    context: ContextDep,
    runtime: RuntimeDep,
) -> None:
    await service.revoke_session(session, actor, admin_id, session_id, settings=context.settings, events=runtime)


@router.get("/me")
async def me(actor: Myself, session: SessionDep, context: ContextDep) -> MeOut:
    admin = await service.get(session, UUID(actor.subject))
    staff = _staff(admin, context.settings)
    return MeOut(**staff.model_dump(), pending=service.pending_for(admin, context.settings))


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_own_password(
    actor: Myself, body: OwnPasswordIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """Every session ends, this one too: sign in again with the new password."""
    await service.change_own_password(
        session,
        actor,
        current=body.current_password,
        new=body.new_password,
        passwords=context.passwords,
        settings=context.settings,
        events=runtime,
    )


@router.post("/me/totp", status_code=status.HTTP_201_CREATED)
async def begin_totp(actor: Myself, session: SessionDep, context: ContextDep, response: Response) -> TotpEnrolmentOut:
    """A new secret for an authenticator app; confirm it with a code at `/v1/admin/me/totp/confirm`."""
    response.headers["Cache-Control"] = "no-store"
    enrolment = await service.begin_totp(session, actor, box=context.totp)
    return TotpEnrolmentOut(secret=enrolment.secret, provisioning_uri=enrolment.provisioning_uri)


@router.post("/me/totp/confirm", status_code=status.HTTP_204_NO_CONTENT)
async def confirm_totp(
    actor: Myself, body: TotpCodeIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """The factor is on; every session ends and the next sign-in needs a code."""
    await service.confirm_totp(
        session, actor, code=body.code.strip(), box=context.totp, settings=context.settings, events=runtime
    )


@router.get("/me/sessions")
async def my_sessions(actor: Myself, session: SessionDep) -> list[StaffSessionOut]:
    rows = await service.list_sessions(session, UUID(actor.subject))
    return [_session(row, actor.token_id) for row in rows]


@router.delete("/me/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_my_session(
    actor: Myself, session_id: UUID, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """End one of one's own sessions (this one too: signing out)."""
    await service.revoke_session(
        session, actor, UUID(actor.subject), session_id, settings=context.settings, events=runtime
    )
