"""The rental lifecycle: ONE table of the allowed transitions, and the one function every change of a
rental's state goes through (the borrow and device handlers, the charge outcomes, the sweepers, support's
corrections). An illegal transition is refused and logged, never applied.

    unlocking --ejected--> active --returned (fee)--> ended --charge settled--> settled
        |                    |                          |  ^
        |                    +--returned (free)----> settled
        |                                               |  |  charge requested again
        +--eject failed / no answer--> failed           v  |
                                         |           unpaid --charge settled late, or debt waived--> settled
                                         +--ejected after all (revived)--> active
"""

import logging

from billing_svc.models import Rental, RentalState
from kit.errors import Conflict

log = logging.getLogger(__name__)

S = RentalState

INITIAL = S.UNLOCKING
TRANSITIONS: dict[RentalState, dict[RentalState, str]] = {
    S.UNLOCKING: {S.ACTIVE: "bank ejected", S.FAILED: "eject failed, or no device answer in time"},
    S.FAILED: {S.ACTIVE: "bank ejected after all (the failure was premature)"},
    S.ACTIVE: {
        S.ENDED: "returned, ended by support, or sold: a fee to charge",
        S.SETTLED: "returned within the free minutes: nothing to charge",
    },
    S.ENDED: {S.SETTLED: "charge settled", S.UNPAID: "charge failed"},
    S.UNPAID: {S.ENDED: "charge requested again", S.SETTLED: "charge settled late, or the debt waived by support"},
    S.SETTLED: {},
}
# Where a rental rests when nothing more happens to it: paid (or free), or never started. A `failed` rental
# still takes a late eject outcome; an `unpaid` one waits for the user's payment or support.
FINAL = frozenset({S.SETTLED, S.FAILED})


class IllegalTransition(Conflict):
    code = "illegal_rental_transition"
    title = "The rental cannot change to that state from its current one"


def allowed(current: RentalState, target: RentalState) -> bool:
    return target in TRANSITIONS[current]


def move(rental: Rental, target: RentalState) -> None:
    """Change `rental.state` to `target` if the table allows it; otherwise log and raise."""
    current = RentalState(rental.state)
    if not allowed(current, target):
        log.error(
            "illegal rental transition refused",
            extra={"rental_id": str(rental.id), "from": current.value, "to": target.value},
        )
        raise IllegalTransition(
            f"a rental cannot go from {current.value} to {target.value}",
            rental_id=str(rental.id),
            state=current.value,
        )
    rental.state = target.value
