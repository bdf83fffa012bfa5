import logging
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.events import UserRegistered
from user_svc.errors import PhoneTaken, UserNotFound
from user_svc.events import EventPublisher
from user_svc.models import User
from user_svc.security import Passwords
from user_svc.terms.service import Terms
from user_svc.users import repository
from user_svc.users.schemas import RegisterUserIn

log = logging.getLogger(__name__)


async def register(
    session: AsyncSession, request: RegisterUserIn, *, terms: Terms, passwords: Passwords, events: EventPublisher
) -> User:
    terms.check_acceptance(accepted=request.terms_accepted, version=request.terms_version)
    # Hash before touching the database, so no connection is held during the slow part.
    password_hash = await passwords.hash(request.password)
    registered_at = datetime.now(UTC)
    user = await repository.insert_if_phone_free(
        session,
        user_id=uuid4(),
        phone=request.phone,
        display_name=request.display_name,
        password_hash=password_hash,
        terms_version=terms.version,
        registered_at=registered_at,
    )
    if user is None:
        raise PhoneTaken()
    await events.publish(
        session,
        UserRegistered(user_id=user.id, registered_at=registered_at, terms_version=terms.version),
        key=str(user.id),
    )
    log.info("user registered", extra={"user_id": str(user.id), "terms_version": terms.version})
    return user


async def profile(session: AsyncSession, user_id: UUID) -> User:
    user = await repository.get_by_id(session, user_id)
    if user is None:
        raise UserNotFound()
    return user
