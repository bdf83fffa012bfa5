import logging
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import UserBlocked, UserUnblocked
from kit.auth import Principal
from user_svc.admins import audit, repository
from user_svc.errors import AdminLoginTaken, UserAlreadyBlocked, UserNotBlocked, UserNotFound
from user_svc.events import EventPublisher
from user_svc.models import AdminRole, User, UserStatus
from user_svc.security import Passwords
from user_svc.sessions import service as sessions
from user_svc.settings import Settings

log = logging.getLogger(__name__)


async def ensure_bootstrap_admin(session: AsyncSession, *, login: str, password: str, passwords: Passwords) -> bool:
    """Create the configured first administrator unless that login exists; never changes an existing one."""
    if await repository.get_by_login(session, login) is not None:
        return False
    created = await repository.insert_if_login_free(
        session,
        admin_id=uuid4(),
        login=login,
        password_hash=await passwords.hash(password),
        role=AdminRole.SUPER_ADMIN,
    )
    if created:
        log.info("bootstrap administrator created", extra={"admin_login": login, "role": AdminRole.SUPER_ADMIN})
    return created


async def block_user(
    session: AsyncSession, actor: Principal, user_id: UUID, *, reason: str, events: EventPublisher, settings: Settings
) -> User:
    """Block a user: sessions end, `user.user.blocked` goes out (billing refuses borrowing), audited."""
    user = await _user_for_update(session, user_id)
    if user.status == UserStatus.BLOCKED:
        raise UserAlreadyBlocked()
    now = datetime.now(UTC)
    user.status = UserStatus.BLOCKED
    user.updated_at = now
    await sessions.end_all(session, user.id, settings, events, reason="user_blocked")
    await events.publish(session, UserBlocked(user_id=user.id, reason=reason, at=now), key=str(user.id))
    await audit.record_change(
        session,
        events,
        actor,
        "user.block",
        target_type="user",
        target_id=str(user.id),
        reason=reason,
        before={"status": UserStatus.ACTIVE},
        after={"status": UserStatus.BLOCKED},
    )
    log.info("user blocked", extra={"user_id": str(user.id), "admin_id": actor.subject})
    return user


async def unblock_user(
    session: AsyncSession, actor: Principal, user_id: UUID, *, reason: str, events: EventPublisher
) -> User:
    user = await _user_for_update(session, user_id)
    if user.status != UserStatus.BLOCKED:
        raise UserNotBlocked()
    now = datetime.now(UTC)
    user.status = UserStatus.ACTIVE
    user.updated_at = now
    await events.publish(session, UserUnblocked(user_id=user.id, at=now), key=str(user.id))
    await audit.record_change(
        session,
        events,
        actor,
        "user.unblock",
        target_type="user",
        target_id=str(user.id),
        reason=reason,
        before={"status": UserStatus.BLOCKED},
        after={"status": UserStatus.ACTIVE},
    )
    log.info("user unblocked", extra={"user_id": str(user.id), "admin_id": actor.subject})
    return user


async def _user_for_update(session: AsyncSession, user_id: UUID) -> User:
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise UserNotFound()
    return user


async def create_admin(
    session: AsyncSession,
    actor: Principal,
    *,
    login: str,
    password: str,
    role: str,
    must_change_password: bool,
    passwords: Passwords,
    events: EventPublisher,
) -> UUID:
    admin_id = uuid4()
    if not await repository.insert_if_login_free(
        session,
        admin_id=admin_id,
        login=login,
        password_hash=await passwords.hash(password),
        role=role,
        must_change_password=must_change_password,
    ):
        raise AdminLoginTaken()
    await audit.record_change(
        session,
        events,
        actor,
        "admin.create",
        target_type="admin",
        target_id=str(admin_id),
        before={},
        after={"login": login, "role": role, "must_change_password": must_change_password},
    )
    return admin_id
