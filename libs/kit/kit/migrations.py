"""Shared Alembic env for every service: `run_migrations(target_metadata)` from each env.py."""

import asyncio
import os

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set DATABASE_URL to migrate")
    return url


def _do_run(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(target_metadata: MetaData) -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run, target_metadata)
    await engine.dispose()


def run_migrations(target_metadata: MetaData) -> None:
    if context.is_offline_mode():
        context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_async(target_metadata))


def add_parked_event_payload() -> None:
    """Every service's migration for issue 14: a parked event keeps its envelope, so it can be replayed;
    retention deletes done ids oldest first by `processed_at`."""
    import sqlalchemy as sa
    from alembic import op

    op.add_column("processed_events", sa.Column("payload", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_processed_events_parked",
        "processed_events",
        ["processed_at"],
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])  # kit.retention


def drop_parked_event_payload() -> None:
    from alembic import op

    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_index("ix_processed_events_parked", table_name="processed_events")
    op.drop_column("processed_events", "payload")


def add_rate_limit_table() -> None:
    """Every service's migration for issue 15: the request counters of kit.ratelimit, UNLOGGED (no WAL)."""
    from alembic import op

    from kit.ratelimit import CREATE_INDEX, CREATE_TABLE

    op.execute(CREATE_TABLE)
    op.execute(CREATE_INDEX)


def drop_rate_limit_table() -> None:
    from alembic import op

    from kit.ratelimit import TABLE

    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
