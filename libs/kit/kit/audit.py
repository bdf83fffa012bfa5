"""One audit trail for every service (T/CA006-2018 6.3.1, issue 15): a staff action becomes a
`StaffActionRecorded` event in the service's outbox, in the same transaction as the action, so the
trail holds exactly what committed. user-svc consumes `audit.staff.v1` into its append-only,
hash-chained store (`/v1/admin/audit-trail`, `/v1/admin/audit-trail/verify`). The envelope carries
the service (producer), the correlation id and the time; the request's address comes from
`kit.correlation`."""

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import EventData, StaffActionRecorded
from kit.auth import Principal
from kit.correlation import get_client_address


class Publisher(Protocol):
    async def publish(self, session: AsyncSession, data: EventData, *, key: str) -> Envelope: ...


async def record_staff_action(
    session: AsyncSession,
    events: Publisher,
    actor: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    reason: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> Envelope:
    """`action` is `<target>.<verb>` (`bank.mark_faulty`); `before`/`after` the fields it changed."""
    return await events.publish(
        session,
        StaffActionRecorded(
            actor_id=actor.subject,
            actor_kind=actor.kind,
            actor_roles=sorted(actor.roles),
            action=action,
            target_type=target_type,
            target_id=str(target_id)[:128],
            reason=reason,
            before=before,
            after=after,
            details=details or {},
            client_address=get_client_address(),
            at=datetime.now(UTC),
        ),
        key=actor.subject,
    )
