"""The audit log of administrative actions: written in the same transaction as the action."""

from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kit.audit import Publisher, record_staff_action
from kit.auth import Principal
from user_svc.models import AdminAction


async def record(
    session: AsyncSession,
    events: Publisher,
    actor: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """A row of user-svc's own log (`/v1/admin/audit-log`) and the platform's audit trail event. A change
    passes the fields it changed as `before` and `after` (`record_change`); a read passes neither."""
    details = dict(details or {})
    if before is not None or after is not None:
        details.update(before=before or {}, after=after or {})
    await record_staff_action(
        session,
        events,
        actor,
        action,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        before=details.get("before"),
        after=details.get("after"),
        details={k: v for k, v in details.items() if k not in ("before", "after")},
    )
    session.add(
        AdminAction(
            admin_id=UUID(actor.subject),
            admin_roles=",".join(sorted(actor.roles))[:200],
            action=action,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            details=details,
        )
    )
    await session.flush()


async def record_change(
    session: AsyncSession,
    events: Publisher,
    actor: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """A staff action that changed something: what it was and what it is now are required (issue 15;
    tests/architecture checks every staff write of user-svc records through here)."""
    await record(
        session,
        events,
        actor,
        action,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        details=details,
        before=before,
        after=after,
    )


async def search(
    session: AsyncSession,
    *,
    admin_id: UUID | None,
    action: str | None,
    target_id: str | None,
    limit: int,
    offset: int,
) -> list[AdminAction]:
    stmt = select(AdminAction).order_by(AdminAction.id.desc()).limit(limit).offset(offset)
    if admin_id is not None:
        stmt = stmt.where(AdminAction.admin_id == admin_id)
    if action is not None:
        stmt = stmt.where(AdminAction.action == action)
    if target_id is not None:
        stmt = stmt.where(AdminAction.target_id == target_id)
    return list(await session.scalars(stmt))
