"""Finance: the ledger's report for a period (a day, a month: `since`/`until`)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from asset_credit_svc.finance import repository
from asset_credit_svc.models import AccountKind
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep
from kit.errors import BusinessError
from kit.inputs import UtcDatetime

router = APIRouter(tags=["finance"])

Finance = Annotated[Principal, Depends(require_permission("ledger:read"))]

# What the platform owes its users: spendable balances, deposits held, red packets granted.
LIABILITY_KINDS = (AccountKind.USER_BALANCE, AccountKind.USER_DEPOSIT, AccountKind.USER_RED_PACKET)


class InvalidPeriod(BusinessError):
    status = 400
    code = "invalid_period"
    title = "The period must end after it starts"


class AccountKindOut(BaseModel):
    account_kind: str
    accounts: int
    opening_fen: int
    increases_fen: int
    decreases_fen: int
    closing_fen: int


class MovementOut(BaseModel):
    transaction_kind: str
    account_kind: str
    transactions: int
    net_fen: int


class LedgerReport(BaseModel):
    since: datetime
    until: datetime
    accounts: list[AccountKindOut]
    movements: list[MovementOut]
    # Owed to users at `until`: balances, deposits held, red packets (a liability is a positive amount).
    owed_to_users_fen: int
    deposits_held_fen: int
    # The platform's revenue of the period (rental fees, value-added services, cards sold; less refunds).
    revenue_fen: int
    # Checks: every posting has its counterpart, so both are zero.
    closing_sum_fen: int
    period_sum_fen: int


@router.get("/v1/admin/finance/ledger-report")
async def ledger_report(since: UtcDatetime, until: UtcDatetime, _: Finance, session: ReadSessionDep) -> LedgerReport:
    if until <= since:
        raise InvalidPeriod()
    kinds = await repository.by_account_kind(session, since, until)
    movements = await repository.by_transaction_kind(session, since, until)
    closing = {k.account_kind: k for k in kinds}
    revenue = closing.get(AccountKind.PLATFORM_REVENUE)
    deposits = closing.get(AccountKind.USER_DEPOSIT)
    return LedgerReport(
        since=since,
        until=until,
        accounts=[AccountKindOut.model_validate(k, from_attributes=True) for k in kinds],
        movements=[MovementOut.model_validate(m, from_attributes=True) for m in movements],
        owed_to_users_fen=sum(closing[k].closing_fen for k in LIABILITY_KINDS if k in closing),
        deposits_held_fen=deposits.closing_fen if deposits else 0,
        revenue_fen=(revenue.increases_fen + revenue.decreases_fen) if revenue else 0,
        closing_sum_fen=sum(k.closing_fen for k in kinds),
        period_sum_fen=sum(k.increases_fen + k.decreases_fen for k in kinds),
    )
