"""Logins. Every failure is the same `invalid_credentials`, a login that names nobody still spends one
password verification, and failures are counted per identifier whether or not it names anyone, so
neither the answer, its timing nor the lockout tells who exists."""

import hashlib
import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from user_svc.admins import repository as admins
from user_svc.codes.service import consume_code
from user_svc.errors import AccountBlocked, CodeInvalid, InvalidCredentials, TotpRequired
from user_svc.models import User, UserStatus
from user_svc.rules import RuleViolation, classify_login, normalise_admin_login
from user_svc.security import IssuedToken, Passwords, Tokens
from user_svc.sessions import service as sessions
from user_svc.sessions.service import IssuedSession, Lockout
from user_svc.settings import Settings
from user_svc.staff import service as staff
from user_svc.staff.totp import TotpSecrets
from user_svc.users import repository as users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserLogin:
    session: IssuedSession
    terms_version: str  # what the user accepted


@dataclass(frozen=True)
class AdminSession:
    token: IssuedToken
    admin_id: UUID
    roles: list[str]  # empty while something is pending
    session_id: UUID
    pending: list[str]
    refresh_token: str | None = None
    refresh_expires_in: int = 0


def _raw_key(raw: str) -> str:
    # A login that is no valid identifier is keyed by its digest (it may hold anything, NUL included).
    return "raw:" + hashlib.sha256(raw.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


def _lock_key(raw: str) -> tuple[str, tuple[str, str] | None]:
    named = classify_login(raw)
    if named is None:
        return f"user:{_raw_key(raw)}", None
    return f"user:{named[0]}:{named[1]}", named


async def login_user(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    login: str,
    password: str,
    passwords: Passwords,
    tokens: Tokens,
    settings: Settings,
    client_ip: str,
) -> UserLogin:
    """Log in by phone, e-mail or user name and password."""
    key, named = _lock_key(login)
    lockout = Lockout(sessionmaker, settings)
    address = Lockout(sessionmaker, settings, max_failures=settings.login_max_failures_per_client)
    address_key = f"client:{client_ip}"
    await address.check(session, address_key)
    await lockout.check(session, key)
    user = await users.get_by_login(session, *named) if named is not None else None
    if user is None:
        await passwords.burn(password)
        await lockout.failed(key)
        await address.failed(address_key)
        raise InvalidCredentials()
    check = await passwords.verify(user.password_hash, password)
    if not check.ok:
        log.info("user login refused", extra={"user_id": str(user.id)})
        await lockout.failed(key)
        await address.failed(address_key)
        raise InvalidCredentials()
    _refuse_inactive(user)
    if check.new_hash is not None:
        user.password_hash = check.new_hash
    await lockout.succeeded(session, key)
    return await _login(session, user, tokens, settings)


async def login_user_by_code(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    phone: str,
    code: str,
    tokens: Tokens,
    settings: Settings,
) -> UserLogin:
    """Log in with a code sent by SMS (purpose `login`) instead of a password."""
    key = f"user:phone:{phone}"
    lockout = Lockout(sessionmaker, settings)
    await lockout.check(session, key)
    try:
        await consume_code(session, sessionmaker, destination=phone, purpose="login", code=code, settings=settings)
    except CodeInvalid:
        await lockout.failed(key)
        raise InvalidCredentials() from None
    user = await users.get_by_phone(session, phone)
    if user is None:
        raise InvalidCredentials()
    _refuse_inactive(user)
    await lockout.succeeded(session, key)
    return await _login(session, user, tokens, settings)


def _refuse_inactive(user: User) -> None:
    # Only said to someone who proved they hold the account (right password or code).
    if user.status != UserStatus.ACTIVE:
        log.info("login of a blocked user refused", extra={"user_id": str(user.id)})
        raise AccountBlocked()


async def _login(session: AsyncSession, user: User, tokens: Tokens, settings: Settings) -> UserLogin:
    issued = await sessions.start(session, user_id=user.id, tokens=tokens, settings=settings)
    return UserLogin(session=issued, terms_version=user.terms_version)


async def login_admin(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    login: str,
    password: str,
    passwords: Passwords,
    tokens: Tokens,
    settings: Settings,
    totp: TotpSecrets,
    totp_code: str | None,
    client_ip: str,
    user_agent: str,
) -> AdminSession:
    """Password, then the TOTP code of an enrolled administrator (a wrong code counts as a failed
    login, so guessing codes meets the lockout). What is pending limits the session (staff.service)."""
    try:
        normalised: str | None = normalise_admin_login(login)
    except RuleViolation:
        normalised = None
    key = f"admin:{normalised or _raw_key(login)}"
    lockout = Lockout(sessionmaker, settings)
    await lockout.check(session, key)
    admin = await admins.get_by_login(session, normalised) if normalised is not None else None
    if admin is None:
        await passwords.burn(password)
        await lockout.failed(key)
        raise InvalidCredentials()
    check = await passwords.verify(admin.password_hash, password)
    if not check.ok or admin.status != UserStatus.ACTIVE:
        log.warning("admin login refused", extra={"admin_id": str(admin.id)})
        await lockout.failed(key)
        raise InvalidCredentials()
    if admin.totp_secret is not None:
        if not totp_code:
            raise TotpRequired()
        if not staff.check_totp(admin, totp_code, totp):
            log.warning("admin login refused: wrong second factor", extra={"admin_id": str(admin.id)})
            await lockout.failed(key)
            raise InvalidCredentials()
    if check.new_hash is not None:
        admin.password_hash = check.new_hash
    await lockout.succeeded(session, key)
    started = await staff.start_session(
        session, admin, tokens=tokens, settings=settings, client_ip=client_ip, user_agent=user_agent
    )
    roles = [] if started.pending else [admin.role]
    log.info("admin logged in", extra={"admin_id": str(admin.id), "role": admin.role, "pending": started.pending})
    return AdminSession(
        token=started.token,
        admin_id=admin.id,
        roles=roles,
        session_id=started.session_id,
        pending=started.pending,
        refresh_token=started.refresh_token,
        refresh_expires_in=started.refresh_expires_in,
    )
