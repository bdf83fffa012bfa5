"""asset-credit-svc settings: the kit's, plus the payment sandbox."""

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from kit.settings import ServiceSettings

DEV_SANDBOX_PAYMENT_SECRET = "dev-sandbox-payment-secret"


class Settings(ServiceSettings):
    service_name: str = "asset-credit-svc"

    # Who takes the money. `sandbox` pretends to (it "pays" everything by itself): development and tests
    # only, production refuses to start with it. `none` serves no provider channel (top-ups and provider
    # payments answer 400 unsupported_channel; balances, charges from them, refunds to them work): what a
    # production deployment runs until a real provider's adapter and credentials are configured.
    payment_provider: Literal["sandbox", "none"] = "sandbox"
    # The sandbox signs its notifications with this key (HMAC-SHA256); outside production it defaults to
    # a development key (the kit refuses any `dev-` secret in production).
    sandbox_payment_secret: SecretStr | None = None
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

    @model_validator(mode="after")
    def _payments_fit_the_environment(self) -> "Settings":
        if self.payment_provider == "sandbox":
            if self.pb_env == "production":
                raise ValueError("PAYMENT_PROVIDER=sandbox only pretends to take money; production refuses it")
            if self.sandbox_payment_secret is None:
                self.sandbox_payment_secret = SecretStr(DEV_SANDBOX_PAYMENT_SECRET)
        return self
