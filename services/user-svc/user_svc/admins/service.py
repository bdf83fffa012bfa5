import logging
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.admins import repository
from user_svc.models import AdminRole
from user_svc.security import Passwords

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
