"""Users' consent to marketing per channel and their quiet hours at /v1/preferences (scope `messages`)."""

from datetime import UTC, datetime

from fastapi import APIRouter

from kit.auth import CurrentUser, user_scope
from kit.db import ReadSessionDep, SessionDep
from notify_svc.models import Preference
from notify_svc.preferences import repository as repo
from notify_svc.preferences.schemas import MarketingConsent, PreferencesIn, PreferencesOut, QuietHours

router = APIRouter(prefix="/v1/preferences", tags=["preferences"], dependencies=[user_scope("messages")])


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _out(row: Preference | None) -> PreferencesOut:
    if row is None:  # never asked: no consent to any marketing
        return PreferencesOut(marketing=MarketingConsent(), updated_at=None)
    quiet = (
        QuietHours(start=_hhmm(row.quiet_start), end=_hhmm(row.quiet_end))
        if row.quiet_start is not None and row.quiet_end is not None
        else None
    )
    return PreferencesOut(
        marketing=MarketingConsent(inbox=row.marketing_inbox, push=row.marketing_push, sms=row.marketing_sms),
        quiet_hours=quiet,
        timezone=row.timezone,
        updated_at=row.updated_at,
    )


@router.get("")
async def mine(user: CurrentUser, session: ReadSessionDep) -> PreferencesOut:
    return _out(await repo.get(session, user.user_id))


@router.put("")
async def update(body: PreferencesIn, user: CurrentUser, session: SessionDep) -> PreferencesOut:
    """Replace the preferences; a withdrawn consent also stops marketing pushes already queued."""
    values: dict[str, object] = {
        "marketing_inbox": body.marketing.inbox,
        "marketing_push": body.marketing.push,
        "marketing_sms": body.marketing.sms,
        "quiet_start": _minutes(body.quiet_hours.start) if body.quiet_hours else None,
        "quiet_end": _minutes(body.quiet_hours.end) if body.quiet_hours else None,
        "timezone": body.timezone,
    }
    await repo.upsert(session, user.user_id, values, datetime.now(UTC))
    return _out(await repo.get(session, user.user_id))
