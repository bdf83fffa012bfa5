from pydantic import Field

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "billing-svc"

    # Pricing (one national price for now; plans by region come later and replace these defaults).
    period_minutes: int = Field(default=30, ge=1, le=24 * 60)
    price_per_period_fen: int = Field(default=150, ge=0)
    free_minutes: int = Field(default=0, ge=0, le=24 * 60)
    daily_cap_fen: int = Field(default=2000, ge=0)
    # Every price has a purchase ceiling (a plan gets this one unless it names its own): an unreturned bank
    # costing this much is the user's, so an unreturned bank never costs more.
    purchase_ceiling_fen: int = Field(default=9900, ge=1)
    # A purchased bank brought back within `buyback_days` of its purchase: the purchase is refunded
    # except this fee (docs/money.md).
    buyback_days: int = Field(default=30, ge=0)
    buyback_fee_fen: int = Field(default=2000, ge=0)

    # Borrowing.
    one_active_rental_per_user: bool = True
    min_balance_to_borrow_fen: int = Field(default=100, ge=0)
    wallet_timeout_s: float = Field(default=0.5, gt=0, le=3.0)
    # The current rental asks device-svc where the bank is (6.1.9); it is shown without a position after this.
    position_timeout_s: float = Field(default=0.5, gt=0, le=3.0)
    eject_deadline_s: float = Field(default=3.5, gt=0, le=30.0)
    # The borrow answer waits for the device's outcome until `borrow_answer_budget_s` after the request
    # arrived (clause 7.1: 5 s), then decides (a rental still unlocking fails with device_no_answer). The
    # command's deadline is cut so that an eject at the deadline leaves `eject_answer_grace_s` of the
    # budget for its result to cross device-svc, Kafka and our consumer; with less than
    # `min_eject_window_s` left for the device, the borrow is shed (503 busy, nothing ejected).
    eject_answer_grace_s: float = Field(default=1.1, ge=0)
    borrow_answer_budget_s: float = Field(default=4.5, gt=0)
    min_eject_window_s: float = Field(default=1.0, gt=0)
    # Fallback re-read of the rental while waiting: the consumer that applied the outcome wakes the
    # request at once (in-process, or by NOTIFY from another instance); the re-read only covers a
    # listener that was reconnecting. Polling faster costs database connections exactly when the
    # consumer needs them (an unlock burst).
    borrow_poll_interval_s: float = Field(default=1.0, gt=0)
    # Load shedding (503 busy, nothing ejected): a borrow is refused while this many wait for their
    # outcome in this instance, or while one has waited this long. An outcome normally arrives in well
    # under a second; one still missing after that means the event pipeline lags, and every eject sent
    # then risks a bank out of its slot while the user is told "no answer".
    max_borrows_waiting: int = Field(default=64, ge=1)
    shed_borrows_after_wait_s: float = Field(default=1.0, gt=0)

    # A rental still `unlocking` this long after its request never got a device answer; it is
    # failed with `device_no_answer` so the user is not blocked. 0 disables the sweeper.
    unlocking_expiry_s: float = Field(default=120.0, ge=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)
    # How often stored return reports are matched again against active rentals (a report that
    # overtook its eject event, or raced it in the other consumer). 0 disables the job.
    reconcile_interval_s: float = Field(default=5.0, ge=0)
