"""Business errors of rentals, each with a stable `code` (rendered as problem+json by the kit)."""

from typing import cast

from contracts.events import EjectFailureReason as Reason
from kit.errors import BusinessError, Conflict, NotFound


class ActiveRentalExists(Conflict):
    code = "active_rental_exists"
    title = "You already have a rental in progress"


class InsufficientBalance(BusinessError):
    status = 402
    code = "insufficient_balance"
    title = "Your balance is too low to borrow; top up first"


class UnpaidDebt(BusinessError):
    status = 402
    code = "unpaid_debt"
    title = "You have an unpaid rental; pay it before borrowing again"


class PaymentPending(Conflict):
    code = "payment_pending"
    title = "A payment for this rental is already in progress"


class NothingToPay(Conflict):
    code = "nothing_to_pay"
    title = "This rental has nothing to pay"


class CreditTooLow(BusinessError):
    status = 403
    code = "credit_too_low"
    title = "Your credit score does not allow borrowing"


class DepositRequired(BusinessError):
    status = 402
    code = "deposit_required"
    title = "Pay the deposit to borrow"


class BorrowRefused(BusinessError):
    status = 403
    code = "borrow_refused"
    title = "Borrowing is not possible for your account right now"


class WalletUnavailable(BusinessError):
    status = 503
    code = "wallet_unavailable"
    title = "Your balance cannot be checked right now; try again shortly"


class UnlocksBusy(BusinessError):
    """Refused before anything started (no rental, no eject): unlocks already waiting show the platform
    cannot confirm more in time."""

    status = 503
    code = "busy"
    title = "Too many unlocks are in progress right now; nothing was ejected, try again in a moment"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__()
        self.headers["Retry-After"] = str(retry_after_s)


class NoActiveRental(NotFound):
    code = "no_active_rental"
    title = "You have no rental in progress"


class RentalNotFound(NotFound):
    code = "rental_not_found"
    title = "No such rental"


class IdempotencyKeyReused(BusinessError):
    status = 422
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was already used for a different request"


class EjectError(BusinessError):
    """A borrow that ejected no bank; `code` is the device's EjectFailureReason value."""


# reason -> (HTTP status, title shown to the user)
_EJECT_ANSWERS: dict[Reason, tuple[int, str]] = {
    Reason.BANK_BATTERY_LOW: (409, "This power bank's battery is too low to rent; try another one"),
    Reason.BANK_FAULTY: (409, "This power bank is faulty; try another one"),
    Reason.BANK_NOT_AVAILABLE: (409, "This power bank is not available"),
    Reason.NO_RENTABLE_BANK: (409, "This cabinet has no power bank to rent right now"),
    Reason.UNKNOWN_CODE: (404, "This code is not a known power bank or cabinet"),
    Reason.CABINET_OFFLINE: (503, "The cabinet is offline; try another one"),
    Reason.DEVICE_NO_ANSWER: (504, "The cabinet did not answer in time"),
    Reason.EJECT_FAILED: (502, "The cabinet could not eject the power bank"),
    Reason.MOTOR_FAULT: (502, "The cabinet could not eject the power bank (motor fault)"),
    Reason.BANK_NOT_PRESENT: (502, "The power bank was not in its slot"),
    Reason.COMMAND_EXPIRED: (502, "The unlock request expired before the cabinet could act"),
}

EJECT_ERRORS: dict[Reason, type[EjectError]] = {
    reason: cast(
        type[EjectError],
        type(f"EjectError_{reason.value}", (EjectError,), {"status": status, "code": reason.value, "title": title}),
    )
    for reason, (status, title) in _EJECT_ANSWERS.items()
}


def eject_error(reason: str | None) -> type[EjectError]:
    """The error for a failure reason; an unknown one (newer contract) answers as `eject_failed`."""
    try:
        return EJECT_ERRORS[Reason(reason or "")]
    except ValueError:
        return EJECT_ERRORS[Reason.EJECT_FAILED]
