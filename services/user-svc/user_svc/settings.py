from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from kit.settings import ServiceSettings
from user_svc.rules import RuleViolation, check_password, normalise_admin_login

# Used only outside production (the kit refuses `dev-` secrets there), so a fresh stack has an admin.
DEV_ADMIN_LOGIN = "admin"
DEV_ADMIN_PASSWORD = "dev-admin-password"


class Settings(ServiceSettings):
    service_name: str = "user-svc"

    jwt_private_key_file: Path
    # Access tokens are short-lived and verified offline by every service; a revoked one (logout, reuse,
    # block, ...) is refused everywhere within about a second through `user.session.revoked` (kit.revocation).
    access_token_ttl_s: int = Field(default=300, ge=60, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300)
    admin_access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    # A staff session is refreshed (a new access token and a new refresh token, the old one spent) while
    # its refresh token is alive (`admin_refresh_idle_s` from the last refresh: an idle console lets it
    # lapse) and never past `admin_session_max_s` from the sign-in.
    admin_refresh_idle_s: int = Field(default=1800, ge=60, le=86_400)
    admin_session_max_s: int = Field(default=12 * 3600, ge=300, le=7 * 86_400)
    # OAuth 2.0 authorization codes (client applications acting for users) are one-time and short-lived.
    oauth_code_ttl_s: int = Field(default=60, ge=10, le=600)

    terms_version: str = Field(default="2026-11", min_length=1, max_length=32)
    terms_text_file: Path | None = None

    # Argon2id cost (argon2-cffi's defaults are RFC 9106's low-memory profile). Each hash holds
    # `memory_kib` of RAM, so at most `password_hash_concurrency` run at once.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65_536, ge=8)
    password_hash_parallelism: int = Field(default=4, ge=1)
    password_hash_concurrency: int = Field(default=2, ge=1)

    # One-time codes (SMS for phones, e-mail for binding an address). `sandbox` only pretends to send
    # (it keeps what it "sent" in the development outbox): development and tests only, production refuses
    # to start with it. `none` sends nothing (a code request answers 502 code_delivery_failed), which is
    # what a production deployment runs until a real gateway's adapter and credentials are configured.
    sms_provider: Literal["sandbox", "none"] = "sandbox"
    sms_sandbox_fail_numbers: list[str] = Field(default_factory=list)  # delivery to these always fails
    sms_sandbox_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    code_ttl_s: int = Field(default=300, ge=30)
    code_max_attempts: int = Field(default=5, ge=1)
    code_resend_interval_s: int = Field(default=60, ge=0)
    code_max_per_destination: int = Field(default=5, ge=1)  # per code_window_s
    code_max_per_client: int = Field(default=30, ge=1)  # per code_window_s, per client address
    code_window_s: int = Field(default=3600, ge=60)

    # Eligibility audit at registration (every decision is recorded in eligibility_decisions).
    eligibility_blocked_numbers: list[str] = Field(default_factory=list)  # E.164 numbers or prefixes ("+86170")
    eligibility_credit_blacklist: list[str] = Field(default_factory=list)  # E.164 numbers on the credit blacklist
    eligibility_min_age_years: int = Field(default=16, ge=0, le=120)  # applied when a birth date is given

    # Deregistration: personal data of a deregistered user is anonymised after the retention period.
    deregistration_retention_s: int = Field(default=180 * 86_400, ge=0)
    anonymise_interval_s: float = Field(default=3600.0, ge=0)  # 0 disables the job
    # Retention (user_svc.retention, docs/accounts.md "Retention"): seconds past each row's time.
    retention_codes_s: int = Field(default=30 * 86_400, ge=86_400)  # SMS codes: sent, to whom, from where
    retention_dev_messages_s: int = Field(default=7 * 86_400, ge=3600)  # the sandbox provider's outbox
    retention_login_failures_s: int = Field(default=30 * 86_400, ge=86_400)  # well past any lockout
    retention_sessions_s: int = Field(default=30 * 86_400, ge=3600)  # past expiry: refresh tokens, codes
    retention_eligibility_s: int = Field(default=365 * 86_400, ge=30 * 86_400)  # registration decisions
    user_retention_interval_s: float = Field(default=3600.0, ge=0)  # 0 disables the job
    # The projection of rentals/payments that deregistration checks (off only in tests that do not need it).
    obligations_consumer: bool = True
    # Texts notify-svc asks for (`user.send_sms`: critical messages no phone received by push).
    sms_commands_consumer: bool = True
    # The platform's audit trail: every service's staff actions (audit.staff.v1) into staff_audit.
    audit_trail_consumer: bool = True

    # Lockout: this many failed logins for one identifier within the window lock it for lockout_s.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_s: int = Field(default=900, ge=1)
    login_lockout_s: int = Field(default=900, ge=1)
    # And this many failed password logins from one client address (any identifiers) lock that address:
    # one address trying many accounts (password spraying, credential stuffing).
    login_max_failures_per_client: int = Field(default=50, ge=1)

    admin_bootstrap_login: str | None = None
    admin_bootstrap_password: SecretStr | None = None

    # Staff second factor (TOTP, RFC 6238). Roles holding any of `admin_totp_permissions` (money moves,
    # personal data; super_admin holds all) must enrol before their sessions carry their role.
    # Required by default in production; a development or test stack opts in (ADMIN_TOTP_REQUIRED=true).
    # An administrator who enrolled needs a code at every sign-in, whatever this says.
    admin_totp_required: bool | None = None
    admin_totp_permissions: list[str] = Field(
        default_factory=lambda: ["users:pii", "credit:adjust", "payments:refund", "ledger:read", "admins:manage"]
    )
    # Encrypts the TOTP secrets at rest (AES-256-GCM with a key derived from this); the kit refuses the
    # `dev-` value in production.
    admin_totp_key: SecretStr = SecretStr("dev-admin-totp-key-not-for-production")
    admin_totp_issuer: str = Field(default="Power bank platform", min_length=1, max_length=64)

    @property
    def totp_enforced(self) -> bool:
        return self.pb_env == "production" if self.admin_totp_required is None else self.admin_totp_required

    @model_validator(mode="after")
    def _no_sandbox_sms_in_production(self) -> "Settings":
        if self.pb_env == "production" and self.sms_provider == "sandbox":
            raise ValueError("SMS_PROVIDER=sandbox only pretends to send codes; production refuses it")
        return self

    @model_validator(mode="after")
    def _admin_bootstrap(self) -> "Settings":
        if self.pb_env != "production" and self.admin_bootstrap_login is None and self.admin_bootstrap_password is None:
            self.admin_bootstrap_login = DEV_ADMIN_LOGIN
            self.admin_bootstrap_password = SecretStr(DEV_ADMIN_PASSWORD)
        if (self.admin_bootstrap_login is None) != (self.admin_bootstrap_password is None):
            raise ValueError("set both ADMIN_BOOTSTRAP_LOGIN and ADMIN_BOOTSTRAP_PASSWORD, or neither")
        if self.admin_bootstrap_login is not None and self.admin_bootstrap_password is not None:
            try:
                self.admin_bootstrap_login = normalise_admin_login(self.admin_bootstrap_login)
                check_password(self.admin_bootstrap_password.get_secret_value())
            except RuleViolation as exc:
                raise ValueError(f"ADMIN_BOOTSTRAP_*: {exc.message}") from None
        return self
