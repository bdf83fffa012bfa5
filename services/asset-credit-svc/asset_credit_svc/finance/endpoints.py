"""Finance: reports for a period (a day, a month: `since`/`until`), each as JSON or, with `format=csv`, CSV:
the ledger's report, the ledger's movements per day, and rental revenue per day and region."""

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from asset_credit_svc.charges.service import ALREADY_CHARGED
from asset_credit_svc.finance import repository
from asset_credit_svc.models import AccountKind
from contracts.regions import DivisionCode, targets
from kit.auth import Principal, require_permission
from kit.csv_export import csv_response
from kit.db import ReadSessionDep
from kit.errors import BusinessError
from kit.inputs import UtcDatetime

router = APIRouter(tags=["finance"])

Finance = Annotated[Principal, Depends(require_permission("ledger:read"))]

# What the platform owes its users: spendable balances, deposits held, red packets granted.
LIABILITY_KINDS = (AccountKind.USER_BALANCE, AccountKind.USER_DEPOSIT, AccountKind.USER_RED_PACKET)


# The longest period one report covers (a year and a day: a leap year's report, with room for its last day).
MAX_PERIOD = timedelta(days=367)

Format = Annotated[Literal["json", "csv"], Query(description="csv: the report's rows as a CSV file")]


class InvalidPeriod(BusinessError):
    status = 400
    code = "invalid_period"
    title = "The period must end after it starts, within a year"


def _check(since: datetime, until: datetime) -> None:
    if until <= since or until - since > MAX_PERIOD:
        raise InvalidPeriod()


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
    # What the channels kept (their fees, booked from their daily statements) and the revenue net of them.
    provider_fees_fen: int
    revenue_net_of_fees_fen: int
    # Checks: every posting has its counterpart, so both are zero.
    closing_sum_fen: int
    period_sum_fen: int


@router.get("/v1/admin/finance/ledger-report", response_model=LedgerReport)
async def ledger_report(
    since: UtcDatetime, until: UtcDatetime, _: Finance, session: ReadSessionDep, format: Format = "json"
) -> LedgerReport | Response:
    """CSV: the account kinds' rows (opening, increases, decreases, closing)."""
    _check(since, until)
    kinds = await repository.by_account_kind(session, since, until)
    movements = await repository.by_transaction_kind(session, since, until)
    closing = {k.account_kind: k for k in kinds}
    revenue = closing.get(AccountKind.PLATFORM_REVENUE)
    deposits = closing.get(AccountKind.USER_DEPOSIT)
    fees = closing.get(AccountKind.PLATFORM_PROVIDER_FEES)
    accounts = [AccountKindOut.model_validate(k, from_attributes=True) for k in kinds]
    if format == "csv":
        return csv_response(accounts, list(AccountKindOut.model_fields), f"ledger-report-{_name(since, until)}")
    revenue_fen = (revenue.increases_fen + revenue.decreases_fen) if revenue else 0
    fees_fen = -(fees.increases_fen + fees.decreases_fen) if fees else 0
    return LedgerReport(
        since=since,
        until=until,
        accounts=accounts,
        movements=[MovementOut.model_validate(m, from_attributes=True) for m in movements],
        owed_to_users_fen=sum(closing[k].closing_fen for k in LIABILITY_KINDS if k in closing),
        deposits_held_fen=deposits.closing_fen if deposits else 0,
        revenue_fen=revenue_fen,
        provider_fees_fen=fees_fen,
        revenue_net_of_fees_fen=revenue_fen - fees_fen,
        closing_sum_fen=sum(k.closing_fen for k in kinds),
        period_sum_fen=sum(k.increases_fen + k.decreases_fen for k in kinds),
    )


def _name(since: datetime, until: datetime) -> str:
    return f"{since:%Y%m%d}-{until:%Y%m%d}"


class DailyMovementOut(BaseModel):
    day: date
    transaction_kind: str
    account_kind: str
    transactions: int
    net_fen: int


class DailyMovements(BaseModel):
    since: datetime
    until: datetime
    rows: list[DailyMovementOut]


@router.get("/v1/admin/finance/daily-movements", response_model=DailyMovements)
async def daily_movements(
    since: UtcDatetime, until: UtcDatetime, _: Finance, session: ReadSessionDep, format: Format = "json"
) -> DailyMovements | Response:
    """The ledger's movements per Beijing day, transaction kind and account kind: top-ups, withdrawals, deposits
    paid (`deposit` on `user_deposit`) and refunded (`deposit_refund`), fees charged and refunded, promotions, the
    channels' fees (`provider_fee` on `platform_provider_fees`). Each day's rows add up to zero."""
    _check(since, until)
    rows = [
        DailyMovementOut.model_validate(m, from_attributes=True)
        for m in await repository.daily_movements(session, since, until)
    ]
    if format == "csv":
        return csv_response(rows, list(DailyMovementOut.model_fields), f"daily-movements-{_name(since, until)}")
    return DailyMovements(since=since, until=until, rows=rows)


class RevenueRowOut(BaseModel):
    day: date
    # The division of the cabinet the bank was borrowed from (null: unknown, e.g. a cabinet without a region).
    region_code: str | None
    rentals: int
    # The fees charged (gross), their discounts by kind, and what users paid in money (balance or channel).
    revenue_fen: int
    card_fen: int
    coupon_fen: int
    red_packet_fen: int
    paid_fen: int
    refunds_fen: int
    net_fen: int


class RevenueReport(BaseModel):
    since: datetime
    until: datetime
    region: str | None
    rows: list[RevenueRowOut]
    rentals: int
    revenue_fen: int
    card_fen: int
    coupon_fen: int
    red_packet_fen: int
    paid_fen: int
    refunds_fen: int
    net_fen: int
    # Checks against the ledger (zero when the charges' own split of their discounts agrees with the postings):
    # card + coupon against the promotions account, red packets against the users' red packet accounts.
    promotions_check_fen: int
    red_packets_check_fen: int
    # What users owe now (failed charges not paid since, not waived; not a ledger account), and for how many
    # rentals. Not limited to the period or the region.
    owed_by_users_fen: int
    owing_rentals: int


@router.get("/v1/admin/finance/revenue", response_model=RevenueReport)
async def revenue_report(
    since: UtcDatetime,
    until: UtcDatetime,
    _: Finance,
    session: ReadSessionDep,
    region: Annotated[DivisionCode | None, Query(description="a division: its rentals and those inside it")] = None,
    format: Format = "json",
) -> RevenueReport | Response:
    """Rental revenue per Beijing day and start cabinet's region, from the ledger's charge and refund transactions."""
    _check(since, until)
    found = [
        r for r in await repository.revenue(session, since, until) if region is None or targets([region], r.region_code)
    ]
    rows = [
        RevenueRowOut(
            day=r.day,
            region_code=r.region_code,
            rentals=r.rentals,
            revenue_fen=r.revenue_fen,
            card_fen=r.card_fen,
            coupon_fen=r.coupon_fen,
            red_packet_fen=r.red_packet_fen,
            paid_fen=r.paid_fen,
            refunds_fen=r.refunds_fen,
            net_fen=r.revenue_fen - r.refunds_fen,
        )
        for r in found
    ]
    if format == "csv":
        return csv_response(rows, list(RevenueRowOut.model_fields), f"revenue-{_name(since, until)}")
    owed, owing = await repository.owed_by_users(session, ALREADY_CHARGED)
    return RevenueReport(
        since=since,
        until=until,
        region=region,
        rows=rows,
        rentals=sum(r.rentals for r in rows),
        revenue_fen=sum(r.revenue_fen for r in rows),
        card_fen=sum(r.card_fen for r in rows),
        coupon_fen=sum(r.coupon_fen for r in rows),
        red_packet_fen=sum(r.red_packet_fen for r in rows),
        paid_fen=sum(r.paid_fen for r in rows),
        refunds_fen=sum(r.refunds_fen for r in rows),
        net_fen=sum(r.net_fen for r in rows),
        promotions_check_fen=sum(r.card_fen + r.coupon_fen - r.ledger_promotions_fen for r in found),
        red_packets_check_fen=sum(r.red_packet_fen - r.ledger_red_packets_fen for r in found),
        owed_by_users_fen=owed,
        owing_rentals=owing,
    )
