"""Blocked users (from user-svc's `user.users.v1`): a blocked user cannot borrow (403 user_blocked).

Owned by issue #3 (accounts and access): a projection of block/unblock events, one consumer, one
check in the borrow path. Events of one user share a partition (key user_id), so they arrive in
order; `at` still guards against an older event overwriting a newer state.

A deregistered user (issue 15) is forgotten as far as money allows: the block reason (staff's words about
them) and the words of their disputes go; rentals, disputes' outcomes and corrections stay, by user id only
(docs/accounts.md "Erasure")."""

from datetime import datetime
from uuid import UUID

from sqlalchemy import DateTime, String, update
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from billing_svc.models import Base, Dispute
from contracts import Envelope, Topic
from contracts.events import UserBlocked, UserDeregistered, UserUnblocked
from kit.app import ConsumerSpec, Runtime
from kit.errors import Forbidden


class UserAccess(Base):
    __tablename__ = "user_access"

    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # active | blocked | deregistered
    reason: Mapped[str | None] = mapped_column(String(500))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserIsBlocked(Forbidden):
    code = "user_blocked"
    title = "This account is blocked and cannot borrow"


async def _set(session: AsyncSession, user_id: UUID, status: str, reason: str | None, at: datetime) -> None:
    stmt = insert(UserAccess).values(user_id=user_id, status=status, reason=reason, changed_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[UserAccess.user_id],
        set_={"status": status, "reason": reason, "changed_at": at},
        where=UserAccess.changed_at <= at,
    )
    await session.execute(stmt)


async def on_user_blocked(session: AsyncSession, envelope: Envelope) -> None:
    assert isinstance(envelope.data, UserBlocked)
    await _set(session, envelope.data.user_id, "blocked", envelope.data.reason[:500], envelope.data.at)


async def on_user_unblocked(session: AsyncSession, envelope: Envelope) -> None:
    assert isinstance(envelope.data, UserUnblocked)
    await _set(session, envelope.data.user_id, "active", None, envelope.data.at)


async def on_user_deregistered(session: AsyncSession, envelope: Envelope) -> None:
    data = envelope.data
    assert isinstance(data, UserDeregistered)
    await _set(session, data.user_id, "deregistered", None, data.at)
    await session.execute(update(Dispute).where(Dispute.user_id == data.user_id).values(reason=""))


def users_consumer_spec(_: Runtime) -> ConsumerSpec:
    return ConsumerSpec(
        topics=[Topic.USERS],
        handlers={
            "user.user.blocked": on_user_blocked,
            "user.user.unblocked": on_user_unblocked,
            "user.user.deregistered": on_user_deregistered,
        },
        name="users",
    )
