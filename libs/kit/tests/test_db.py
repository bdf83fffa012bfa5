"""The kit's engine against the real PostgreSQL: no pre-ping round trip, yet a pooled connection the
server closed is replaced at checkout instead of failing the next unit of work."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import column, event, insert, table, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from kit.db import ReadOnlyViolation, make_engine, make_sessionmaker, read_sessionmaker, unit_of_work
from kit.testing import ensure_database, eventually, test_database_url

pytestmark = pytest.mark.integration


@pytest.fixture
async def engines() -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    url = test_database_url("kit_db")
    await ensure_database(url)
    engine, admin = make_engine(url, pool_size=2), make_engine(url, pool_size=1)
    yield engine, admin
    await engine.dispose()
    await admin.dispose()


async def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, admin_engine = engines
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    sessions = make_sessionmaker(engine)
    async with unit_of_work(sessions) as session:
        first_pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert statements == ["SELECT pg_backend_pid()"]  # nothing but the work itself

    async with admin_engine.connect() as admin:  # as a server restart would
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        await admin.commit()

    async def gone() -> bool:
        async with admin_engine.connect() as conn:
            found = await conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": first_pid})
            return found.first() is None

    await eventually(gone, what="the terminated backend to exit")
    for _ in range(3):  # every pooled connection is tried: none fails its unit of work
        async with unit_of_work(sessions) as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid != first_pid


async def test_a_read_session_runs_each_statement_on_its_own_and_refuses_writes(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, _ = engines
    xid = text("SELECT txid_current()")  # the same for every statement of one transaction

    async def transactions_seen(session: AsyncSession) -> int:
        return len({(await session.execute(xid)).scalar_one() for _ in range(2)})

    async with unit_of_work(make_sessionmaker(engine)) as session:
        assert await transactions_seen(session) == 1
    async with read_sessionmaker(engine)() as session:
        assert await transactions_seen(session) == 2  # no BEGIN ... COMMIT around them
        with pytest.raises(ReadOnlyViolation):
            await session.execute(insert(table("whatever", column("x"))).values(x=1))
    async with unit_of_work(make_sessionmaker(engine)) as session:  # the pooled connection is back to normal
        assert await transactions_seen(session) == 1
