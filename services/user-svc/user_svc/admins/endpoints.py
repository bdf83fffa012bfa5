"""Administration: search, view, block and unblock users, create administrators, read the audit log.
Every action is recorded in the audit log; permissions come from `kit.auth.ROLE_PERMISSIONS`."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, status

from kit.app import RuntimeDep
from kit.auth import CurrentPrincipal, Principal
from kit.db import SessionDep
from kit.errors import Forbidden
from kit.pii import PII_PERMISSION, mask_email, mask_name, mask_phone
from user_svc.admins import audit, repository, service
from user_svc.admins.schemas import AdminActionOut, AdminUserOut, NewAdminIn, NewAdminOut, ReasonIn
from user_svc.context import ContextDep
from user_svc.errors import TokenRevoked
from user_svc.models import AdminAction, User
from user_svc.sessions import service as sessions
from user_svc.users.service import profile
from user_svc.validators import PlainText

router = APIRouter(prefix="/v1/admin", tags=["administration"])


def admin_with(permission: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(principal: CurrentPrincipal, session: SessionDep) -> Principal:
        if principal.kind != "admin" or not principal.can(permission):
            raise Forbidden(f"An administrator with the permission {permission!r} is required")
        # The revocation listener refuses revoked tokens within about a second in every service;
        # here, where staff accounts change, the table answers at once.
        if await sessions.is_revoked(session, principal.token_id):
            raise TokenRevoked()
        return principal

    return dependency


UserReader = Annotated[Principal, Depends(admin_with("users:read"))]
UserBlocker = Annotated[Principal, Depends(admin_with("users:block"))]
AdminManager = Annotated[Principal, Depends(admin_with("admins:manage"))]
AuditReader = Annotated[Principal, Depends(admin_with("audit:read"))]


def _user(user: User, *, reveal: bool = False) -> AdminUserOut:
    """Phone, e-mail and names masked unless revealed (`users:pii`, audited)."""
    return AdminUserOut(
        user_id=user.id,
        phone=user.phone if reveal else mask_phone(user.phone) or "",
        email=user.email if reveal else mask_email(user.email),
        username=user.username if reveal else mask_name(user.username),
        display_name=user.display_name if reveal else mask_name(user.display_name),
        masked=not reveal,
        status=user.status,
        registered_at=user.registered_at,
        terms_version=user.terms_version,
    )


@router.get("/users")
async def search_users(
    actor: UserReader,
    session: SessionDep,
    runtime: RuntimeDep,
    q: Annotated[
        PlainText | None, Query(max_length=64, description="part of phone, e-mail, user or display name")
    ] = None,
    user_status: Annotated[Literal["active", "blocked"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AdminUserOut]:
    users = await repository.search_users(session, query=q, status=user_status, limit=limit, offset=offset)
    await audit.record(
        session,
        runtime,
        actor,
        "user.search",
        target_type="user",
        target_id="*",
        details={"q": q, "status": user_status},
    )
    return [_user(u) for u in users]


@router.get("/users/{user_id}")
async def view_user(
    actor: UserReader,
    user_id: UUID,
    session: SessionDep,
    runtime: RuntimeDep,
    reveal: Annotated[bool, Query(description="unmasked personal data: needs users:pii, audited")] = False,
) -> AdminUserOut:
    if reveal and not actor.can(PII_PERMISSION):
        raise Forbidden(f"Revealing personal data needs the permission {PII_PERMISSION!r}")
    user = await profile(session, user_id)
    action = "user.pii_reveal" if reveal else "user.view"
    await audit.record(session, runtime, actor, action, target_type="user", target_id=str(user_id))
    return _user(user, reveal=reveal)


@router.post("/users/{user_id}/block")
async def block_user(
    actor: UserBlocker, user_id: UUID, body: ReasonIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> AdminUserOut:
    user = await service.block_user(
        session, actor, user_id, reason=body.reason, events=runtime, settings=context.settings
    )
    return _user(user)


@router.post("/users/{user_id}/unblock")
async def unblock_user(
    actor: UserBlocker, user_id: UUID, body: ReasonIn, session: SessionDep, runtime: RuntimeDep
) -> AdminUserOut:
    return _user(await service.unblock_user(session, actor, user_id, reason=body.reason, events=runtime))


@router.post("/admins", status_code=status.HTTP_201_CREATED)
async def create_admin(
    actor: AdminManager, body: NewAdminIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> NewAdminOut:
    """With `must_change_password` (the default) the new administrator's first sign-in can only
    replace the password the creator chose."""
    admin_id = await service.create_admin(
        session,
        actor,
        login=body.login,
        password=body.password,
        role=body.role,
        must_change_password=body.must_change_password,
        passwords=context.passwords,
        events=runtime,
    )
    return NewAdminOut(
        admin_id=admin_id, login=body.login, role=body.role, must_change_password=body.must_change_password
    )


def _action(row: AdminAction) -> AdminActionOut:
    return AdminActionOut(
        id=row.id,
        admin_id=row.admin_id,
        admin_roles=[r for r in row.admin_roles.split(",") if r],
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        reason=row.reason,
        details=row.details,
        at=row.at,
    )


@router.get("/audit-log")
async def audit_log(
    _: AuditReader,
    session: SessionDep,
    admin_id: UUID | None = None,
    action: Annotated[PlainText | None, Query(max_length=60)] = None,
    target_id: Annotated[PlainText | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AdminActionOut]:
    rows = await audit.search(
        session, admin_id=admin_id, action=action, target_id=target_id, limit=limit, offset=offset
    )
    return [_action(r) for r in rows]
