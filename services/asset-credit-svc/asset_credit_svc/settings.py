"""asset-credit-svc settings: the kit's, plus the payment sandbox."""

from pydantic import SecretStr

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
