"""Staff accounts (T/CA006-2018 6.3.1): list, change role, disable and enable, reset password (a
one-time password the next sign-in must replace), TOTP second factor (required for roles that move
money or see personal data), sign-ins kept so they can be listed and revoked.

A sign-in with something pending (a password to change, a second factor to enrol) gets a restricted
token: no roles, so no permission anywhere; it opens only `/v1/admin/me/*`. Every change here that
alters what a session may do (role, disable, password reset, factor reset) revokes the sessions."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from kit.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS, Principal
from user_svc.admins import audit
from user_svc.errors import (
    AdminAlreadyInState,
    AdminNotFound,
    AdminSelfChange,
    AdminSessionNotFound,
    InvalidCredentials,
    InvalidRefreshToken,
    LastSuperAdmin,
    TotpAlreadyEnrolled,
    TotpCodeInvalid,
    TotpNotPending,
)
from user_svc.events import EventPublisher
from user_svc.models import Admin, AdminRole, AdminSession, UserStatus
from user_svc.security import IssuedToken, Passwords, Tokens
from user_svc.sessions import service as sessions
from user_svc.sessions.repository import RevokedRow
from user_svc.settings import Settings
from user_svc.staff import repository
from user_svc.staff.totp import TotpSecrets, matching_step, new_secret

log = logging.getLogger(__name__)

DISABLED = "disabled"
PENDING_PASSWORD = "password_change"
PENDING_TOTP = "totp_enrolment"


def totp_required_for(role: str, settings: Settings) -> bool:
    """Whether the role moves money or sees personal data (holds one of ADMIN_TOTP_PERMISSIONS)."""
    granted = ROLE_PERMISSIONS.get(role, frozenset())
    return ALL_PERMISSIONS in granted or bool(granted & set(settings.admin_totp_permissions))


def pending_for(admin: Admin, settings: Settings) -> list[str]:
    pending = []
    if admin.must_change_password:
        pending.append(PENDING_PASSWORD)
    if admin.totp_secret is None and settings.totp_enforced and totp_required_for(admin.role, settings):
        pending.append(PENDING_TOTP)
    return pending


def check_totp(admin: Admin, code: str, box: TotpSecrets) -> bool:
    """Verify a sign-in code of an enrolled administrator; a code is accepted once."""
    assert admin.totp_secret is not None
    step = matching_step(box.open(admin.id, admin.totp_secret), code, after_step=admin.totp_last_step)
    if step is None:
        return False
    admin.totp_last_step = step
    return True


@dataclass(frozen=True)
class StaffSession:
    token: IssuedToken
    session_id: UUID
    pending: list[str]
    # None for a restricted session (something pending): it is not refreshed, the staff member signs in
    # again once the password or the factor is done.
    refresh_token: str | None = None
    refresh_expires_in: int = 0


def _refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_refresh(row: AdminSession, now: datetime, settings: Settings) -> tuple[str, int]:
    """A new refresh token for the session (the previous one spent and kept to catch its reuse)."""
    assert row.ends_at is not None
    token = secrets.token_urlsafe(32)
    row.previous_refresh_hash = row.refresh_hash
    row.refresh_hash = _refresh_hash(token)
    row.refresh_expires_at = min(now + timedelta(seconds=settings.admin_refresh_idle_s), row.ends_at)
    return token, max(0, int((row.refresh_expires_at - now).total_seconds()))


async def start_session(
    session: AsyncSession,
    admin: Admin,
    *,
    tokens: Tokens,
    settings: Settings,
    client_ip: str,
    user_agent: str,
) -> StaffSession:
    now = datetime.now(UTC)
    pending = pending_for(admin, settings)
    token = tokens.for_admin(str(admin.id), [] if pending else [admin.role])
    row = AdminSession(
        id=uuid4(),
        admin_id=admin.id,
        token_id=token.token_id,
        restricted=bool(pending),
        client_ip=client_ip[:64],
        user_agent=user_agent[:200],
        created_at=now,
        expires_at=now + timedelta(seconds=token.expires_in),
        ends_at=now + timedelta(seconds=settings.admin_session_max_s),
    )
    refresh, refresh_in = (None, 0) if pending else _new_refresh(row, now, settings)
    if row.refresh_expires_at is not None:
        row.expires_at = max(row.expires_at, row.refresh_expires_at)  # the session lives while it can refresh
    repository.add_session(session, row)
    admin.last_login_at = now
    await session.flush()
    return StaffSession(
        token=token, session_id=row.id, pending=pending, refresh_token=refresh, refresh_expires_in=refresh_in
    )


@dataclass(frozen=True)
class Refreshed:
    session: StaffSession
    admin_id: UUID
    roles: list[str]


async def refresh_session(
    session: AsyncSession, refresh_token: str, *, tokens: Tokens, settings: Settings, events: EventPublisher
) -> Refreshed | None:
    """A new access token and a new refresh token for a live staff session; the presented one is spent.
    An unknown, expired or revoked token raises InvalidRefreshToken. A spent one presented again (a
    stolen copy, or the owner after a thief) revokes the session and answers None, so the caller can
    commit that revocation and refuse."""
    now = datetime.now(UTC)
    presented = _refresh_hash(refresh_token)
    row = await repository.session_by_refresh(session, presented)
    if row is None:
        spent = await repository.session_by_previous_refresh(session, presented)
        if spent is not None and spent.revoked_at is None:
            log.warning("staff refresh token reused: session revoked", extra={"admin_id": str(spent.admin_id)})
            await end_sessions(
                session, spent.admin_id, settings=settings, events=events, reason="refresh_reused", session_id=spent.id
            )
            return None
        raise InvalidRefreshToken()
    if row.revoked_at is not None or row.refresh_expires_at is None or row.refresh_expires_at <= now:
        raise InvalidRefreshToken()
    admin = await repository.get(session, row.admin_id)
    if admin is None or admin.status != UserStatus.ACTIVE:
        raise InvalidRefreshToken()
    roles = [] if row.restricted else [admin.role]
    token = tokens.for_admin(str(admin.id), roles)
    row.previous_token_id = row.token_id
    row.token_id = token.token_id
    refresh, refresh_in = _new_refresh(row, now, settings)
    row.expires_at = max(now + timedelta(seconds=token.expires_in), row.refresh_expires_at or now)
    await session.flush()
    return Refreshed(
        StaffSession(token=token, session_id=row.id, pending=[], refresh_token=refresh, refresh_expires_in=refresh_in),
        admin.id,
        roles,
    )


async def end_sessions(
    session: AsyncSession,
    admin_id: UUID,
    *,
    settings: Settings,
    events: EventPublisher,
    reason: str,
    session_id: UUID | None = None,
) -> int:
    """Revoke the administrator's live sessions (or one): refused in every service at once."""
    rows = await repository.revoke_sessions(
        session, admin_id, now=datetime.now(UTC), reason=reason, session_id=session_id
    )
    # A refreshed session's tokens were issued long after it began: announced as of now, so every service
    # hears of them; the access token the last refresh replaced is denied too (it may still be valid).
    now = datetime.now(UTC)
    revoked = [
        RevokedRow(r.admin_id, token_id, now if r.previous_token_id else r.created_at)
        for r in rows
        for token_id in (r.token_id, r.previous_token_id)
        if token_id
    ]
    await sessions.revoke_access_tokens(session, revoked, events=events, settings=settings, reason=reason)
    return len(rows)


async def get(session: AsyncSession, admin_id: UUID, *, for_update: bool = False) -> Admin:
    admin = await repository.get(session, admin_id, for_update=for_update)
    if admin is None:
        raise AdminNotFound()
    return admin


async def search(
    session: AsyncSession, *, status: str | None, role: str | None, limit: int, offset: int
) -> list[Admin]:
    return await repository.search(session, status=status, role=role, limit=limit, offset=offset)


async def directory(session: AsyncSession, *, roles: list[str]) -> list[Admin]:
    return await repository.active_by_login(session, roles=roles, limit=500)


async def _refuse_losing_last_super_admin(session: AsyncSession, admin: Admin) -> None:
    if admin.role != AdminRole.SUPER_ADMIN or admin.status != UserStatus.ACTIVE:
        return
    await repository.lock_super_admins(session)
    if await repository.count_active_super_admins(session) <= 1:
        raise LastSuperAdmin()


async def _changed(
    session: AsyncSession,
    actor: Principal,
    admin: Admin,
    action: str,
    *,
    settings: Settings,
    events: EventPublisher,
    end_sessions_because: str | None,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str | None = None,
    at: datetime | None = None,
) -> None:
    """What every change of an account does after changing it: stamp it, end its sessions when what
    they may do changed (`end_sessions_because`), and record the action in the audit trail."""
    admin.updated_at = at or datetime.now(UTC)
    if end_sessions_because:
        await end_sessions(session, admin.id, settings=settings, events=events, reason=end_sessions_because)
    await audit.record_change(
        session,
        events,
        actor,
        action,
        target_type="admin",
        target_id=str(admin.id),
        reason=reason,
        before=before,
        after=after,
    )


async def change_role(
    session: AsyncSession,
    actor: Principal,
    admin_id: UUID,
    *,
    role: str,
    reason: str,
    settings: Settings,
    events: EventPublisher,
) -> Admin:
    if str(admin_id) == actor.subject:
        raise AdminSelfChange()
    admin = await get(session, admin_id, for_update=True)
    if admin.role == role:
        raise AdminAlreadyInState(f"The administrator already has the role {role!r}")
    if role != AdminRole.SUPER_ADMIN:
        await _refuse_losing_last_super_admin(session, admin)
    before = admin.role
    admin.role = role
    await _changed(
        session,
        actor,
        admin,
        "admin.role_change",
        settings=settings,
        events=events,
        end_sessions_because="admin_role_changed",
        reason=reason,
        before={"role": before},
        after={"role": role},
    )
    return admin


async def set_enabled(
    session: AsyncSession,
    actor: Principal,
    admin_id: UUID,
    *,
    enabled: bool,
    reason: str,
    settings: Settings,
    events: EventPublisher,
) -> Admin:
    if str(admin_id) == actor.subject:
        raise AdminSelfChange()
    admin = await get(session, admin_id, for_update=True)
    wanted = UserStatus.ACTIVE if enabled else DISABLED
    if admin.status == wanted:
        raise AdminAlreadyInState(f"The administrator is already {wanted}")
    if not enabled:
        await _refuse_losing_last_super_admin(session, admin)
    before = admin.status
    admin.status = wanted
    await _changed(
        session,
        actor,
        admin,
        "admin.enable" if enabled else "admin.disable",
        settings=settings,
        events=events,
        end_sessions_because=None if enabled else "admin_disabled",
        reason=reason,
        before={"status": before},
        after={"status": wanted},
    )
    return admin


async def reset_password(
    session: AsyncSession,
    actor: Principal,
    admin_id: UUID,
    *,
    reason: str,
    passwords: Passwords,
    settings: Settings,
    events: EventPublisher,
) -> str:
    """A one-time password, answered once; the next sign-in must replace it. Sessions end."""
    admin = await get(session, admin_id, for_update=True)
    had_to_change = admin.must_change_password
    temporary = secrets.token_urlsafe(15)
    admin.password_hash = await passwords.hash(temporary)
    admin.must_change_password = True
    await _changed(
        session,
        actor,
        admin,
        "admin.password_reset",
        settings=settings,
        events=events,
        end_sessions_because="admin_password_reset",
        reason=reason,
        before={"must_change_password": had_to_change, "password": "set"},
        after={"must_change_password": True, "password": "reset"},
    )
    return temporary


async def reset_totp(
    session: AsyncSession,
    actor: Principal,
    admin_id: UUID,
    *,
    reason: str,
    settings: Settings,
    events: EventPublisher,
) -> Admin:
    """Remove the second factor (a lost phone): the next sign-in enrols again. Sessions end."""
    admin = await get(session, admin_id, for_update=True)
    had = admin.totp_secret is not None
    admin.totp_secret = None
    admin.totp_pending = None
    admin.totp_enabled_at = None
    admin.totp_last_step = None
    await _changed(
        session,
        actor,
        admin,
        "admin.totp_reset",
        settings=settings,
        events=events,
        end_sessions_because="admin_totp_reset",
        reason=reason,
        before={"totp": had},
        after={"totp": False},
    )
    return admin


async def revoke_session(
    session: AsyncSession,
    actor: Principal,
    admin_id: UUID,
    session_id: UUID,
    *,
    settings: Settings,
    events: EventPublisher,
) -> None:
    if not await end_sessions(
        session, admin_id, settings=settings, events=events, reason="admin_session_revoked", session_id=session_id
    ):
        raise AdminSessionNotFound()
    await audit.record_change(
        session,
        events,
        actor,
        "admin.session_revoke",
        target_type="admin",
        target_id=str(admin_id),
        details={"session_id": str(session_id)},
        before={"session": "active"},
        after={"session": "revoked"},
    )


async def list_sessions(session: AsyncSession, admin_id: UUID, *, limit: int = 100) -> list[AdminSession]:
    await get(session, admin_id)
    return await repository.sessions_of(session, admin_id, now=datetime.now(UTC), limit=limit)


# The administrator's own account (a restricted session may do these).


async def change_own_password(
    session: AsyncSession,
    actor: Principal,
    *,
    current: str,
    new: str,
    passwords: Passwords,
    settings: Settings,
    events: EventPublisher,
) -> None:
    """Needs the current password; ends every session, this one included (sign in again)."""
    admin = await get(session, UUID(actor.subject), for_update=True)
    if not (await passwords.verify(admin.password_hash, current)).ok:
        raise InvalidCredentials("The current password is wrong")
    if new == current:
        raise InvalidCredentials("The new password must differ from the current one")
    admin.password_hash = await passwords.hash(new)
    had_to_change, admin.must_change_password = admin.must_change_password, False
    await _changed(
        session,
        actor,
        admin,
        "admin.password_change",
        settings=settings,
        events=events,
        end_sessions_because="admin_password_changed",
        before={"must_change_password": had_to_change, "password": "set"},
        after={"must_change_password": False, "password": "changed"},
    )


@dataclass(frozen=True)
class Enrolment:
    secret: str
    provisioning_uri: str


async def begin_totp(session: AsyncSession, actor: Principal, *, box: TotpSecrets) -> Enrolment:
    """A new secret for the authenticator app; it counts once a code from it is confirmed."""
    admin = await get(session, UUID(actor.subject), for_update=True)
    if admin.totp_secret is not None:
        raise TotpAlreadyEnrolled()
    secret = new_secret()
    admin.totp_pending = box.seal(admin.id, secret)
    return Enrolment(secret=secret, provisioning_uri=box.provisioning_uri(secret, admin.login))


async def confirm_totp(
    session: AsyncSession,
    actor: Principal,
    *,
    code: str,
    box: TotpSecrets,
    settings: Settings,
    events: EventPublisher,
) -> None:
    """The app shows the right code: the factor is on. Sessions end; the next sign-in needs a code."""
    admin = await get(session, UUID(actor.subject), for_update=True)
    if admin.totp_secret is not None:
        raise TotpAlreadyEnrolled()
    if admin.totp_pending is None:
        raise TotpNotPending()
    step = matching_step(box.open(admin.id, admin.totp_pending), code, after_step=None)
    if step is None:
        raise TotpCodeInvalid()
    now = datetime.now(UTC)
    admin.totp_secret, admin.totp_pending = admin.totp_pending, None
    admin.totp_enabled_at = now
    admin.totp_last_step = step
    await _changed(
        session,
        actor,
        admin,
        "admin.totp_enrol",
        settings=settings,
        events=events,
        end_sessions_because="admin_totp_enrolled",
        before={"totp": False},
        after={"totp": True},
        at=now,
    )
    log.info("administrator enrolled a second factor", extra={"admin_id": str(admin.id)})
