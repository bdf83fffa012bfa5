"""Which bank an eject may take: pure rules, unit-tested without a database."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from contracts.events import EjectFailureReason
from contracts.mqtt import EjectResultCode


@dataclass(frozen=True)
class BankView:
    id: str
    state: str
    battery_pct: int | None
    cabinet_id: str | None
    slot_no: int | None
    slot_fault: str | None = None
    pending_command: bool = False
    reported_fault: bool = False  # users reported it broken; staff have not cleared it yet


class CodeKind:
    BANK = "bank"
    CABINET = "cabinet"
    UNKNOWN = "unknown"


def bank_refusal(
    bank: BankView, *, cabinet_online: bool | None, min_battery_pct: int
) -> tuple[EjectFailureReason, str] | None:
    """Why `bank` cannot be ejected now, or None when it can. `cabinet_online` is None when the
    bank is in no known cabinet."""
    if bank.state == "faulty":
        return EjectFailureReason.BANK_FAULTY, "the bank is marked faulty"
    if bank.reported_fault:
        return EjectFailureReason.BANK_FAULTY, "a user reported the bank faulty; it waits for staff to check it"
    if bank.slot_fault is not None:
        return EjectFailureReason.BANK_FAULTY, f"its slot reports {bank.slot_fault}"
    if bank.state != "in_cabinet" or bank.cabinet_id is None or bank.slot_no is None:
        return EjectFailureReason.BANK_NOT_AVAILABLE, f"the bank is {bank.state}"
    if bank.pending_command:
        return EjectFailureReason.BANK_NOT_AVAILABLE, "another eject of this bank is in progress"
    if not cabinet_online:
        return EjectFailureReason.CABINET_OFFLINE, f"cabinet {bank.cabinet_id} is offline"
    if bank.battery_pct is None or bank.battery_pct < min_battery_pct:
        return EjectFailureReason.BANK_BATTERY_LOW, f"battery {bank.battery_pct}% is below {min_battery_pct}%"
    return None


def is_rentable(bank: BankView, min_battery_pct: int) -> bool:
    return bank_refusal(bank, cabinet_online=True, min_battery_pct=min_battery_pct) is None


def pick_best_bank(banks: Iterable[BankView], min_battery_pct: int) -> BankView | None:
    """The cabinet's rentable bank with the most charge (ties: lowest slot, then id)."""
    rentable = [b for b in banks if is_rentable(b, min_battery_pct)]
    if not rentable:
        return None
    return min(rentable, key=lambda b: (-(b.battery_pct or 0), b.slot_no or 0, b.id))


def deadline_passed(deadline: datetime, now: datetime) -> bool:
    return deadline <= now


RESULT_REASONS: dict[EjectResultCode, EjectFailureReason] = {
    EjectResultCode.FAILED: EjectFailureReason.EJECT_FAILED,
    EjectResultCode.MOTOR_FAULT: EjectFailureReason.MOTOR_FAULT,
    EjectResultCode.BANK_NOT_PRESENT: EjectFailureReason.BANK_NOT_PRESENT,
    EjectResultCode.EXPIRED: EjectFailureReason.COMMAND_EXPIRED,
    EjectResultCode.TIMEOUT: EjectFailureReason.DEVICE_NO_ANSWER,
}


def failure_reason(code: EjectResultCode) -> EjectFailureReason:
    return RESULT_REASONS.get(code, EjectFailureReason.EJECT_FAILED)
