"""What user-svc must not keep forever (issue 15), deleted by a periodic job at a bounded cost per run
(kit.retention: oldest first through an index on the time, a batch per transaction). The periods are
settings; docs/accounts.md "Retention" says why each is what it is."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kit.retention import TimeIndexed, prune_by_time
from user_svc.settings import Settings


@dataclass(frozen=True)
class Rule:
    target: TimeIndexed
    keep_setting: str  # the Settings field holding how many seconds past `time_column` a row is kept


RULES = (
    Rule(TimeIndexed("verification_codes", ("id",), "created_at"), "retention_codes_s"),  # the SMS log
    Rule(TimeIndexed("dev_messages", ("id",), "created_at"), "retention_dev_messages_s"),
    Rule(TimeIndexed("login_failures", ("key",), "window_started_at"), "retention_login_failures_s"),
    Rule(TimeIndexed("refresh_tokens", ("id",), "expires_at"), "retention_sessions_s"),
    Rule(TimeIndexed("revoked_access_tokens", ("jti",), "expires_at"), "retention_sessions_s"),
    Rule(TimeIndexed("oauth_codes", ("code_hash",), "expires_at"), "retention_sessions_s"),
    Rule(TimeIndexed("eligibility_decisions", ("id",), "at"), "retention_eligibility_s"),
)


async def prune_expired(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime
) -> dict[str, int]:
    """One run over every rule; how many rows each table lost."""
    pruned = {}
    for rule in RULES:
        keep_s = getattr(settings, rule.keep_setting)
        pruned[rule.target.table] = await prune_by_time(
            sessionmaker,
            rule.target,
            older_than=now - timedelta(seconds=keep_s),
            batch=settings.retention_batch,
            max_batches=settings.retention_max_batches,
        )
    return pruned
