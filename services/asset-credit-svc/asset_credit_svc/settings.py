"""asset-credit-svc settings: the kit's, plus the payment sandbox."""

from pydantic import Field, SecretStr

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "asset-credit-svc"

    # The sandbox payment provider signs its notifications with this key (HMAC-SHA256). The kit
    # refuses a `dev-` value in production.
    sandbox_payment_secret: SecretStr = SecretStr("dev-sandbox-payment-secret")
    # How the sandbox behaves like a real provider: it "pays" after a random delay, then notifies
    # and retries a failed notification with exponential backoff.
    sandbox_pay_delay_min_s: float = 0.05
    sandbox_pay_delay_max_s: float = 0.2
    sandbox_notify_attempts: int = 6
    sandbox_notify_backoff_s: float = 0.2

    top_up_max_fen: int = 1_000_000
    # The deposit a user pays (fen).
    deposit_fen: int = 9_900

    # Credit (0..1000). Levels by lower bound; who may borrow without a deposit, and who not at all.
    credit_initial: int = 600
    credit_on_time_return: int = 5
    credit_overdue: int = -30
    credit_overdue_after_s: int = 24 * 60 * 60
    credit_lost_bank: int = -150
    credit_unpaid_debt: int = -50
    credit_levels: dict[str, int] = Field(
        default_factory=lambda: {"excellent": 750, "good": 600, "fair": 450, "poor": 300, "bad": 0}
    )
    credit_no_deposit_min: int = 550
    credit_refuse_below: int = 300

    # Charges paid by the user's provider: a charge whose notification has not come after
    # `provider_query_after_s` is resolved by asking the provider; an order the provider does not
    # know after `provider_give_up_after_s` fails the charge (the rental becomes unpaid).
    provider_sweep_interval_s: float = 10.0
    provider_query_after_s: float = 30.0
    provider_give_up_after_s: float = 900.0

    # Virtual assets: how often expired coupons, red packets and cards are marked (a red packet's
    # remainder goes back to promotions). An expired asset never applies, swept or not.
    asset_expiry_interval_s: float = 30.0
