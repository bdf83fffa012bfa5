"""Top-up queries."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from asset_credit_svc.models import TopUp, TopUpStatus


async def stale_pending_top_ups(session: AsyncSession, older_than: datetime, limit: int) -> Sequence[TopUp]:
    """Pending top-ups made before `older_than`, oldest first, locked; rows another replica holds are skipped."""
    return (
        (
            await session.execute(
                select(TopUp)
                .where(TopUp.status == TopUpStatus.PENDING.value, TopUp.created_at < older_than)
                .order_by(TopUp.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        .scalars()
        .all()
    )
