"""What the user reads: money as ¥X.XX, durations as `1 h 5 min`, a reason for every failure.

Pure functions, so each wording is unit-tested without a database.
"""

from dataclasses import dataclass

from contracts.events import (
    ChargeFailed,
    ChargeSettled,
    EjectFailureReason,
    RefundSettled,
    RentalEnded,
    RentalFailed,
    RentalStarted,
    ReportKind,
)
from notify_svc.models import Category

NOT_CHARGED = "You have not been charged."

REASON_TEXT: dict[EjectFailureReason, str] = {
    EjectFailureReason.BANK_BATTERY_LOW: "The power bank's battery is too low to lend it. Please choose another one.",
    EjectFailureReason.BANK_FAULTY: "The power bank is faulty and cannot be lent. Please choose another one.",
    EjectFailureReason.BANK_NOT_AVAILABLE: "The power bank is not available for rent right now.",
    EjectFailureReason.UNKNOWN_CODE: "The code you scanned is not a known power bank or cabinet.",
    EjectFailureReason.CABINET_OFFLINE: "The cabinet is offline. Please try another cabinet.",
    EjectFailureReason.NO_RENTABLE_BANK: "The cabinet has no power bank to lend right now. Please try another cabinet.",
    EjectFailureReason.DEVICE_NO_ANSWER: "The cabinet did not answer in time. Please try again.",
    EjectFailureReason.EJECT_FAILED: "The cabinet could not release the power bank. Please try again.",
    EjectFailureReason.MOTOR_FAULT: "The cabinet's release mechanism is faulty. Please try another cabinet.",
    EjectFailureReason.BANK_NOT_PRESENT: "The power bank was not in its slot. Please try another one.",
    EjectFailureReason.COMMAND_EXPIRED: "The cabinet did not release the power bank in time. Please try again.",
}
GENERIC_REASON = "The power bank could not be released."

CHARGE_FAILURE_TEXT: dict[str, str] = {
    "insufficient_balance": "your balance is too low",
    "wallet_frozen": "your wallet is frozen",
    "no_wallet": "you have no wallet yet",
    "provider_declined": "your payment provider declined the charge",
    "provider_unavailable": "the payment provider could not be reached",
}


@dataclass(frozen=True)
class Text:
    category: Category
    title: str
    body: str
    # The user must learn this even without the app: pushed, and texted when no phone got the push.
    critical: bool = False


def format_fen(fen: int) -> str:
    """Integer fen as yuan with two decimals: 300 -> `¥3.00`, -5 -> `-¥0.05`."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan}.{cents:02d}"


def format_duration(seconds: int) -> str:
    """Human duration, to the minute below: `45 s`, `5 min`, `1 h 5 min`, `2 h`, `1 d 3 h`."""
    seconds = max(0, seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes_total = seconds // 60
    days, rest = divmod(minutes_total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} d")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    return " ".join(parts)


def failure_reason(reason: EjectFailureReason | str) -> str:
    try:
        return REASON_TEXT[EjectFailureReason(reason)]
    except ValueError:
        return GENERIC_REASON


def charge_failure_reason(reason: str) -> str:
    key = reason.strip().lower()
    if key in CHARGE_FAILURE_TEXT:
        return CHARGE_FAILURE_TEXT[key]
    return key.replace("_", " ") or "the payment was declined"


def rental_ended(data: RentalEnded) -> Text:
    if data.purchased:
        body = (
            f"Power bank {data.bank_id} was not returned within {format_duration(data.duration_seconds)}, "
            f"so it is now yours: you were charged the purchase price {format_fen(data.fee_fen)}."
        )
        return Text(Category.RENTAL, "Power bank purchased", body, critical=True)
    body = (
        f"You returned power bank {data.bank_id} at {data.return_cabinet_id} "
        f"after {format_duration(data.duration_seconds)}. Fee: {format_fen(data.fee_fen)}."
    )
    return Text(Category.RENTAL, "Rental ended", body)


def rental_failed(data: RentalFailed) -> Text:
    return Text(Category.RENTAL, "Borrowing failed", f"{failure_reason(data.reason)} {NOT_CHARGED}")


def charge_settled(data: ChargeSettled) -> Text:
    discounts = [
        f"{label} {format_fen(fen)}"
        for label, fen in (("card", data.card_fen), ("coupon", data.coupon_fen), ("red packets", data.red_packet_fen))
        if fen
    ]
    if not discounts:
        body = (
            f"Payment confirmed: {format_fen(data.amount_fen)} from your balance for your rental. "
            f"Balance: {format_fen(data.balance_fen)}."
        )
    else:
        paid = data.amount_fen if data.paid_fen is None else data.paid_fen
        body = (
            f"Payment confirmed: fee {format_fen(data.amount_fen)}, discount "
            f"{format_fen(data.card_fen + data.coupon_fen + data.red_packet_fen)} ({', '.join(discounts)}), "
            f"{format_fen(paid)} from your balance. Balance: {format_fen(data.balance_fen)}."
        )
    return Text(Category.PAYMENT, "Payment confirmed", body)


def charge_failed(data: ChargeFailed) -> Text:
    body = (
        f"We could not collect {format_fen(data.amount_fen)} for your rental "
        f"({charge_failure_reason(data.reason)}); please pay manually in the app."
    )
    return Text(Category.PAYMENT, "Payment failed", body, critical=True)


def rental_revived(data: RentalStarted) -> Text:
    """A cabinet ejected the bank after all, after the user was told borrowing failed."""
    when = data.started_at.strftime("%H:%M:%S UTC")
    body = (
        f"The cabinet did release power bank {data.bank_id} from slot {data.slot} after all, at {when}. "
        "As we told you, this rental is free of charge; please return the bank at any cabinet "
        "(a bank never returned is still charged its purchase price)."
    )
    return Text(Category.RENTAL, "The power bank came out after all", body)


def refund_settled(data: RefundSettled) -> Text:
    body = (
        f"Refund of {format_fen(data.amount_fen)} for your rental credited to your balance. "
        f"Balance: {format_fen(data.balance_fen)}."
    )
    return Text(Category.PAYMENT, "Refund received", body)


REPORT_NAMES: dict[ReportKind, str] = {
    ReportKind.FAULTY_BANK: "faulty power bank",
    ReportKind.DAMAGED_CABLE: "damaged cable",
    ReportKind.ABUSE: "abuse report",
    ReportKind.APP_PROBLEM: "app problem",
    ReportKind.OTHER: "report",
}


def ticket_reply(kind: ReportKind, reply: str) -> Text:
    """Customer service answered a report; the staff member's words as written (plain text)."""
    return Text(Category.SERVICE, f"Customer service replied to your {REPORT_NAMES[kind]}", reply)


def vas_fee_settled(name: str, amount_fen: int, balance_fen: int) -> Text:
    body = f"Paid {format_fen(amount_fen)} from your balance for {name}. Balance: {format_fen(balance_fen)}."
    return Text(Category.PAYMENT, "Payment confirmed", body)


def vas_fee_refunded(name: str, amount_fen: int, balance_fen: int) -> Text:
    body = f"We refunded {format_fen(amount_fen)} for {name} to your balance. Balance: {format_fen(balance_fen)}."
    return Text(Category.PAYMENT, "Refund received", body)


def vas_fee_failed(name: str, amount_fen: int) -> Text:
    body = (
        f"We could not take {format_fen(amount_fen)} for {name}: your balance is too low. The service is not "
        "active; top up and accept it again in the app."
    )
    return Text(Category.PAYMENT, "Payment failed", body, critical=True)
