"""Password logins. Every failure is the same `invalid_credentials`, and a login that names nobody
still spends one password verification, so neither the answer nor its timing tells who exists."""

import logging
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.admins import repository as admins
from user_svc.errors import InvalidCredentials
from user_svc.models import UserStatus
from user_svc.rules import RuleViolation, normalise_admin_login, normalise_phone
from user_svc.security import IssuedToken, Passwords, Tokens
from user_svc.users import repository as users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserSession:
    token: IssuedToken
    user_id: UUID


@dataclass(frozen=True)
class AdminSession:
    token: IssuedToken
    admin_id: UUID
    role: str


async def login_user(
    session: AsyncSession, *, login: str, password: str, passwords: Passwords, tokens: Tokens
) -> UserSession:
    try:
        phone = normalise_phone(login)
    except RuleViolation:
        phone = None
    user = await users.get_by_phone(session, phone) if phone is not None else None
    if user is None:
        await passwords.burn(password)
        raise InvalidCredentials()
    check = await passwords.verify(user.password_hash, password)
    if not check.ok or user.status != UserStatus.ACTIVE:
        log.info("user login refused", extra={"user_id": str(user.id)})
        raise InvalidCredentials()
    if check.new_hash is not None:
        user.password_hash = check.new_hash
    return UserSession(token=tokens.for_user(str(user.id)), user_id=user.id)


async def login_admin(
    session: AsyncSession, *, login: str, password: str, passwords: Passwords, tokens: Tokens
) -> AdminSession:
    try:
        normalised = normalise_admin_login(login)
    except RuleViolation:
        normalised = None
    admin = await admins.get_by_login(session, normalised) if normalised is not None else None
    if admin is None:
        await passwords.burn(password)
        raise InvalidCredentials()
    check = await passwords.verify(admin.password_hash, password)
    if not check.ok or admin.status != UserStatus.ACTIVE:
        log.warning("admin login refused", extra={"admin_id": str(admin.id)})
        raise InvalidCredentials()
    if check.new_hash is not None:
        admin.password_hash = check.new_hash
    log.info("admin logged in", extra={"admin_id": str(admin.id), "role": admin.role})
    return AdminSession(token=tokens.for_admin(str(admin.id), admin.role), admin_id=admin.id, role=admin.role)
