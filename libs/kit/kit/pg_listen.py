"""PostgreSQL LISTEN/NOTIFY across the replicas of a service: `notify` inside a unit of work (delivered
only if it commits, to every instance listening), `listen` as a background task that hands each payload
to a callback. Wake-ups only: a listener that was reconnecting missed what was sent meanwhile, so the
waiting side always keeps a (slow) re-read of the database as its fallback."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)


async def notify(session: AsyncSession, channel: str, payload: str) -> None:
    """Queue a notification in the session's transaction; PostgreSQL sends it at commit."""
    await session.execute(select(func.pg_notify(channel, payload)))


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (`postgresql+asyncpg://...`) as a DSN asyncpg connects with."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    database_url: str,
    channel: str,
    on_payload: Callable[[str], None],
    *,
    on_connected: Callable[[], None] | None = None,
    retry_s: float = 1.0,
) -> None:
    """LISTEN on `channel` for as long as the task runs, reconnecting after a lost connection.
    `on_connected` runs after each (re)connection: whatever was notified meanwhile was missed."""
    dsn = asyncpg_dsn(database_url)
    while True:
        closed = asyncio.Event()
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot LISTEN; retrying", extra={"channel": channel, "error": repr(exc)})
            await asyncio.sleep(retry_s)
            continue
        try:
            conn.add_termination_listener(lambda _conn, ended=closed: ended.set())
            await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_payload(payload))
            if on_connected is not None:
                on_connected()
            await closed.wait()
            log.warning("LISTEN connection lost; reconnecting", extra={"channel": channel})
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN failed; retrying", extra={"channel": channel, "error": repr(exc)})
            await asyncio.sleep(retry_s)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
