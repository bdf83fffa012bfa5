"""The states of a priced consent's payment, as one table: asset-credit answers an acceptance once (`paid` or
`failed`), and finance may give a paid fee back, once (`refunded`). No row yet reads as `pending`."""

from typing import Literal

PaymentState = Literal["paid", "failed", "refunded"]

# state before (None: no answer recorded yet) -> the states an event may move it to
TRANSITIONS: dict[PaymentState | None, frozenset[PaymentState]] = {
    None: frozenset({"paid", "failed"}),
    "paid": frozenset({"refunded"}),
    "failed": frozenset(),
    "refunded": frozenset(),
}


def allowed(before: PaymentState | None, after: PaymentState) -> bool:
    return after in TRANSITIONS[before]
