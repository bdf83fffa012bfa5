import logging
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import UserRegistered
from user_svc.codes.service import consume_code
from user_svc.errors import EmailTaken, InvalidCredentials, PhoneTaken, UsernameTaken, UserNotFound
from user_svc.events import EventPublisher
from user_svc.models import User
from user_svc.security import Passwords
from user_svc.sessions import service as sessions
from user_svc.settings import Settings
from user_svc.terms.service import Terms
from user_svc.users import eligibility, repository
from user_svc.users.schemas import ProfilePatchIn, RegisterUserIn

log = logging.getLogger(__name__)


async def register(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    request: RegisterUserIn,
    *,
    terms: Terms,
    passwords: Passwords,
    events: EventPublisher,
    settings: Settings,
) -> User | eligibility.Verdict:
    """The new user, or the rejecting verdict of the eligibility audit (recorded in `session`,
    which the caller commits while answering the reasons)."""
    terms.check_acceptance(accepted=request.terms_accepted, version=request.terms_version)
    await consume_code(
        session, sessionmaker, destination=request.phone, purpose="register", code=request.sms_code, settings=settings
    )
    registered_at = datetime.now(UTC)
    verdict = await eligibility.assess(
        session, settings, phone=request.phone, birth_date=request.birth_date, today=registered_at.date()
    )
    if not verdict.accepted:
        await eligibility.record(session, settings, phone=request.phone, verdict=verdict, user_id=None)
        log.info("registration rejected", extra={"reasons": verdict.reasons})
        return verdict
    # Hash before inserting, so no row lock is held during the slow part.
    password_hash = await passwords.hash(request.password)
    user = await repository.insert_if_phone_free(
        session,
        user_id=uuid4(),
        phone=request.phone,
        display_name=request.display_name,
        password_hash=password_hash,
        terms_version=terms.version,
        registered_at=registered_at,
        birth_date=request.birth_date,
    )
    if user is None:
        raise PhoneTaken()  # a concurrent registration of the same number won
    await eligibility.record(session, settings, phone=request.phone, verdict=verdict, user_id=user.id)
    await events.publish(
        session,
        UserRegistered(
            user_id=user.id,
            registered_at=registered_at,
            terms_version=terms.version,
            birth_year=request.birth_date.year if request.birth_date else None,
        ),
        key=str(user.id),
    )
    log.info("user registered", extra={"user_id": str(user.id), "terms_version": terms.version})
    return user


async def profile(session: AsyncSession, user_id: UUID) -> User:
    user = await repository.get_by_id(session, user_id)
    if user is None:
        raise UserNotFound()
    return user


async def edit_profile(session: AsyncSession, user_id: UUID, patch: ProfilePatchIn) -> User:
    user = await profile(session, user_id)
    fields = patch.model_fields_set
    if "display_name" in fields:
        user.display_name = patch.display_name
    if "username" in fields:
        if patch.username is not None and patch.username != user.username:
            other = await repository.get_by_login(session, "username", patch.username)
            if other is not None:
                raise UsernameTaken()
        user.username = patch.username
    user.updated_at = datetime.now(UTC)
    try:
        await session.flush()
    except IntegrityError:
        raise UsernameTaken() from None
    return user


async def change_password(
    session: AsyncSession,
    user_id: UUID,
    *,
    current: str,
    new: str,
    passwords: Passwords,
    settings: Settings,
    events: EventPublisher,
) -> None:
    """Needs the current password; ends every session (refresh tokens) of the user."""
    user = await profile(session, user_id)
    if not (await passwords.verify(user.password_hash, current)).ok:
        raise InvalidCredentials("The current password is wrong")
    user.password_hash = await passwords.hash(new)
    user.updated_at = datetime.now(UTC)
    await sessions.end_all(session, user.id, settings, events, reason="password_changed")
    log.info("password changed", extra={"user_id": str(user.id)})


async def bind_email(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: UUID,
    *,
    email: str,
    code: str,
    settings: Settings,
) -> User:
    user = await profile(session, user_id)
    await consume_code(session, sessionmaker, destination=email, purpose="bind_email", code=code, settings=settings)
    other = await repository.get_by_login(session, "email", email)
    if other is not None and other.id != user.id:
        raise EmailTaken()
    user.email = email
    user.updated_at = datetime.now(UTC)
    try:
        await session.flush()
    except IntegrityError:
        raise EmailTaken() from None
    return user


async def accept_terms(session: AsyncSession, user_id: UUID, *, terms: Terms, accepted: bool, version: str) -> User:
    terms.check_acceptance(accepted=accepted, version=version)
    user = await profile(session, user_id)
    now = datetime.now(UTC)
    user.terms_version = terms.version
    user.terms_accepted_at = now
    user.updated_at = now
    return user
