"""The platform's answers to an adapter's questions, from device-svc's database."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_svc.models import Cabinet, Command

# An eject's answer arriving later than this after the command is matched to nothing.
ANSWER_WINDOW = timedelta(minutes=10)


class DbLookup:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def protocol_of(self, device_id: str) -> str | None:
        async with self._sessionmaker() as session:
            protocol: str | None = (
                await session.execute(select(Cabinet.protocol).where(Cabinet.id == device_id))
            ).scalar_one_or_none()
            return protocol

    async def pending_eject(self, device_id: str, bank_id: str | None, slot: int | None) -> str | None:
        """The newest eject at this cabinet for this bank (or slot) within the answer window, one still
        waiting first; a final one too, so that a bank that came out after we gave up is still reported."""
        stmt = select(Command.cmd_id).where(
            Command.cabinet_id == device_id, Command.created_at > datetime.now(UTC) - ANSWER_WINDOW
        )
        if bank_id is not None:
            stmt = stmt.where(Command.bank_id == bank_id)
        elif slot is not None:
            stmt = stmt.where(Command.slot == slot)
        else:
            return None
        stmt = stmt.order_by((Command.status == "sent").desc(), Command.created_at.desc()).limit(1)
        async with self._sessionmaker() as session:
            cmd_id = (await session.execute(stmt)).scalar_one_or_none()
        return str(cmd_id) if cmd_id is not None else None
