"""asset-credit-svc settings: the kit's, plus the payment sandbox."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from kit.settings import ServiceSettings

DEV_SANDBOX_PAYMENT_SECRET = "dev-sandbox-payment-secret"
CHANNELS = ("alipay", "wechat", "bank_card")


class Settings(ServiceSettings):
    service_name: str = "asset-credit-svc"

    # Who takes the money. `sandbox` pretends to (it "pays" everything by itself): development and tests
    # only, production refuses to start with it. `none` serves no provider channel (top-ups and provider
    # payments answer 400 unsupported_channel; balances, charges from them, refunds to them work): what a
    # production deployment runs until a real provider's adapter and credentials are configured.
    payment_provider: Literal["sandbox", "none"] = "sandbox"
    # Per channel, what takes its money, overriding PAYMENT_PROVIDER: the channel's real adapter
    # (`alipay`, `wechatpay`), the sandbox, or `none`. Unset: PAYMENT_PROVIDER.
    payment_provider_alipay: Literal["alipay", "sandbox", "none"] | None = None
    payment_provider_wechat: Literal["wechatpay", "sandbox", "none"] | None = None
    # The bank-card / online-banking channel: UnionPay's online gateway (`unionpay`), the sandbox, or `none`.
    payment_provider_bank_card: Literal["unionpay", "sandbox", "none"] | None = None
    # Where the real providers reach this service: `<base>/v1/payments/<channel>/notify`.
    payment_notify_base_url: str | None = None
    # A gateway that has not answered by then is unreachable for this call (the caller retries).
    payment_gateway_timeout_s: float = 10.0

    # Alipay open API (RSA2): the app's id and private key, Alipay's public key (PEM files).
    alipay_app_id: str | None = None
    alipay_gateway_url: str = "https://openapi.alipay.com/gateway.do"
    alipay_app_private_key_file: Path | None = None
    alipay_public_key_file: Path | None = None

    # WeChat Pay API v3: merchant id, app id, the merchant's PEM private key and its certificate's serial,
    # the APIv3 key (32 bytes), and WeChat Pay's keys: platform certificate PEM files (or, when none are
    # given, fetched from the gateway at start) and/or its public key with its PUB_KEY_ID_... id.
    # `app` serves the WeChat app SDK; `jsapi` pays inside WeChat and needs the payer's openid.
    wechatpay_mchid: str | None = None
    wechatpay_appid: str | None = None
    wechatpay_api_url: str = "https://api.mch.weixin.qq.com"
    wechatpay_merchant_key_file: Path | None = None
    wechatpay_merchant_serial_no: str | None = None
    wechatpay_apiv3_key: SecretStr | None = None
    wechatpay_platform_cert_files: list[Path] = Field(default_factory=list)
    wechatpay_public_key_file: Path | None = None
    wechatpay_public_key_id: str | None = None
    wechatpay_trade_type: Literal["app", "jsapi"] = "app"
    # UnionPay online gateway (ACP 5.1.0, bank cards): merchant id, the merchant's signing key (PEM, taken
    # out of the PFX UnionPay issues) and its certificate's serial (`certId`, decimal), UnionPay's root and
    # middle certificates (what vouches for the signing certificate each answer carries), the gateway, and
    # where the browser lands after paying (`frontUrl`: it shows the outcome; the back-end notice decides).
    unionpay_mer_id: str | None = None
    unionpay_sign_key_file: Path | None = None
    unionpay_sign_cert_id: str | None = None
    unionpay_root_cert_file: Path | None = None
    unionpay_middle_cert_file: Path | None = None
    unionpay_gateway_url: str = "https://gateway.95516.com"
    # Where the daily reconciliation file is fetched (fileTransfer.do lives on its own host).
    unionpay_file_url: str = "https://filedownload.95516.com"
    unionpay_front_url: str | None = None
    unionpay_channel_type: Literal["07", "08"] = "08"
    # The sandbox signs its notifications with this key (HMAC-SHA256); outside production it defaults to
    # a development key (the kit refuses any `dev-` secret in production).
    sandbox_payment_secret: SecretStr | None = None
    # How the sandbox behaves like a real provider: it "pays" after a random delay, then notifies
    # and retries a failed notification with exponential backoff.
    sandbox_pay_delay_min_s: float = 0.05
    sandbox_pay_delay_max_s: float = 0.2
    sandbox_notify_attempts: int = 6
    sandbox_notify_backoff_s: float = 0.2
    # Where the sandbox keeps its orders (one JSON file per channel), so that, like a real provider, it still
    # knows them after this service restarts (`make chaos` sets it); unset: it forgets them.
    sandbox_state_dir: Path | None = None

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
    # Top-ups (and deposit payments) whose notification never came (lost, or its retries ran out while this
    # service was down): every `top_up_sweep_interval_s` (0: never), those pending for `top_up_query_after_s` are
    # asked at their provider and settled as the notification would have; a top-up still unpaid after
    # `top_up_expire_after_s` is closed at the provider (where the channel can) and failed as `expired`.
    top_up_sweep_interval_s: float = 15.0
    top_up_query_after_s: float = 60.0
    top_up_expire_after_s: float = 1800.0

    # Virtual assets: how often expired coupons, red packets and cards are marked (a red packet's
    # remainder goes back to promotions). An expired asset never applies, swept or not.
    asset_expiry_interval_s: float = 30.0

    # How often the daily statements of the last two days are fetched and reconciled, per channel with
    # statements (the real adapters; the channels make a day's statement the next morning, Beijing time).
    statement_interval_s: float = 3600.0

    # The VAT a rental receipt shows as included in the fee (power-bank rental is the lease of movable
    # property: 13 % general rate; 0 leaves the tax line out, e.g. for a small-scale taxpayer's own rules).
    receipt_vat_rate_percent: int = Field(default=13, ge=0, le=100)
    receipt_vat_name: str = "VAT (增值税)"

    def provider_for(self, channel: str) -> str:
        chosen = {
            "alipay": self.payment_provider_alipay,
            "wechat": self.payment_provider_wechat,
            "bank_card": self.payment_provider_bank_card,
        }.get(channel)
        return chosen or self.payment_provider

    @model_validator(mode="after")
    def _payments_fit_the_environment(self) -> "Settings":
        chosen = {channel: self.provider_for(channel) for channel in CHANNELS}
        if "sandbox" in chosen.values():
            if self.pb_env == "production":
                sandboxed = ", ".join(c for c, p in chosen.items() if p == "sandbox")
                raise ValueError(f"the sandbox only pretends to take money ({sandboxed}); production refuses it")
            if self.sandbox_payment_secret is None:
                self.sandbox_payment_secret = SecretStr(DEV_SANDBOX_PAYMENT_SECRET)
        real = [p for p in chosen.values() if p not in ("sandbox", "none")]
        if real and not self.payment_notify_base_url:
            raise ValueError("a real payment provider needs PAYMENT_NOTIFY_BASE_URL to notify this service")
        if chosen["alipay"] == "alipay":
            missing = [
                name
                for name in ("alipay_app_id", "alipay_app_private_key_file", "alipay_public_key_file")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"PAYMENT_PROVIDER_ALIPAY=alipay needs {', '.join(m.upper() for m in missing)}")
        if chosen["wechat"] == "wechatpay":
            needed = (
                "wechatpay_mchid",
                "wechatpay_appid",
                "wechatpay_merchant_key_file",
                "wechatpay_merchant_serial_no",
                "wechatpay_apiv3_key",
            )
            missing = [name for name in needed if not getattr(self, name)]
            if missing:
                raise ValueError(f"PAYMENT_PROVIDER_WECHAT=wechatpay needs {', '.join(m.upper() for m in missing)}")
            apiv3_key = self.wechatpay_apiv3_key.get_secret_value() if self.wechatpay_apiv3_key else ""
            if len(apiv3_key.encode()) != 32:
                raise ValueError("WECHATPAY_APIV3_KEY is 32 bytes")
            if (self.wechatpay_public_key_file is None) != (self.wechatpay_public_key_id is None):
                raise ValueError("WECHATPAY_PUBLIC_KEY_FILE and WECHATPAY_PUBLIC_KEY_ID go together")
        if chosen["bank_card"] == "unionpay":
            unionpay_needed = (
                "unionpay_mer_id",
                "unionpay_sign_key_file",
                "unionpay_sign_cert_id",
                "unionpay_root_cert_file",
                "unionpay_middle_cert_file",
                "unionpay_front_url",
            )
            missing = [name for name in unionpay_needed if not getattr(self, name)]
            if missing:
                raise ValueError(f"PAYMENT_PROVIDER_BANK_CARD=unionpay needs {', '.join(m.upper() for m in missing)}")
        return self
