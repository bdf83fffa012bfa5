"""Async engine, sessions, and the one place that commits a unit of work."""

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AfterCommit = Callable[[], Awaitable[None] | None]


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def define_kit_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and processed-event tables every service keeps in its own database."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("event_id", PgUUID(as_uuid=True), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )
    processed = Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", PgUUID(as_uuid=True), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("status", String(20), nullable=False, server_default="done"),
        Column("error", Text, nullable=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        # A parked event's envelope (status `failed`), to replay it once the cause is fixed (kit.parked).
        Column("payload", LargeBinary, nullable=True),
        Index("ix_processed_events_parked", "processed_at", postgresql_where=text("status = 'failed'")),
        Index("ix_processed_events_processed_at", "processed_at"),  # retention: the oldest first
    )
    return outbox, processed


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """No `pool_pre_ping`: it costs a round trip before every transaction. A connection the server
    closed (restart, terminated backend) is known to asyncpg without one, and is replaced at checkout
    (`_replace_closed_connection`); one that dies unnoticed fails its unit of work once, and SQLAlchemy
    then invalidates the whole pool (consumers retry the event; an HTTP client gets a 500 once)."""
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False)
    event.listen(engine.sync_engine.pool, "checkout", _replace_closed_connection)
    return engine


def _replace_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # DisconnectionError at checkout makes the pool discard this connection and open a new one.
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the current unit of work has committed (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(callback)


@asynccontextmanager
async def unit_of_work(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """The one place that commits or rolls back. Services and repositories only flush."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
        for callback in callbacks:
            result = callback()
            if result is not None:
                await result


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.runtime.sessionmaker) as session:
        yield session


# scope="function": commit right after the endpoint returns, before the response is sent, so a
# client never sees success for something that did not commit.
SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]


class ReadOnlyViolation(RuntimeError):
    """A read session was asked to write: writes belong in a unit of work."""


class _ReadOnlySession(Session):
    pass


@event.listens_for(_ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    raise ReadOnlyViolation("a read session never flushes; use SessionDep or unit_of_work to write")


@event.listens_for(_ReadOnlySession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyViolation("a read session never writes; use SessionDep or unit_of_work to write")


_read_sessionmakers: "weakref.WeakKeyDictionary[AsyncEngine, async_sessionmaker[AsyncSession]]" = (
    weakref.WeakKeyDictionary()
)


def read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads only, without a transaction: each statement runs on its own (autocommit),
    one round trip instead of BEGIN + statement + COMMIT. Under READ COMMITTED every statement of a
    transaction sees its own snapshot anyway, so reads lose nothing; locks and writes are refused."""
    found = _read_sessionmakers.get(engine)
    if found is None:
        found = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            sync_session_class=_ReadOnlySession,
        )
        _read_sessionmakers[engine] = found
    return found


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with read_sessionmaker(request.app.state.runtime.engine)() as session:
        yield session


# For GET endpoints that only read (hot paths clients poll).
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
