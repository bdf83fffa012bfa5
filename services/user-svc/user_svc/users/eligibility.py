"""The eligibility audit at registration: configurable rules, every decision recorded with its reasons."""

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from user_svc.models import EligibilityDecision
from user_svc.settings import Settings
from user_svc.users import repository


@dataclass(frozen=True)
class Verdict:
    reasons: list[str]

    @property
    def accepted(self) -> bool:
        return not self.reasons


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


async def assess(
    session: AsyncSession, settings: Settings, *, phone: str, birth_date: date | None, today: date
) -> Verdict:
    reasons: list[str] = []
    if await repository.get_by_phone(session, phone) is not None:
        reasons.append("duplicate_identity")
    if any(phone.startswith(blocked) for blocked in settings.eligibility_blocked_numbers):
        reasons.append("number_blocked")
    if phone in settings.eligibility_credit_blacklist:
        reasons.append("credit_blacklisted")
    if birth_date is not None and _age(birth_date, today) < settings.eligibility_min_age_years:
        reasons.append("under_minimum_age")
    return Verdict(reasons)


def rules_of(settings: Settings) -> dict[str, Any]:
    return {
        "blocked_numbers": len(settings.eligibility_blocked_numbers),
        "credit_blacklist": len(settings.eligibility_credit_blacklist),
        "min_age_years": settings.eligibility_min_age_years,
    }


async def record(
    session: AsyncSession, settings: Settings, *, phone: str, verdict: Verdict, user_id: UUID | None
) -> None:
    session.add(
        EligibilityDecision(
            phone=phone, user_id=user_id, accepted=verdict.accepted, reasons=verdict.reasons, rules=rules_of(settings)
        )
    )
    await session.flush()
