"""What the console reads from its environment: the services' addresses (the stack's env file sets
them for every process), the operator's time zone and the session limits."""

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    pb_env: str = "development"
    log_level: str = "INFO"
    user_svc_url: str = "http://127.0.0.1:8001"
    device_svc_url: str = "http://127.0.0.1:8002"
    billing_svc_url: str = "http://127.0.0.1:8003"
    asset_svc_url: str = "http://127.0.0.1:8004"
    notify_svc_url: str = "http://127.0.0.1:8005"
    analytics_svc_url: str = "http://127.0.0.1:8006"
    # The operator's time zone: every time on every page is shown in it.
    console_timezone: str = "Asia/Shanghai"
    console_default_lang: str = Field(default="zh", pattern="^(zh|en)$")
    # A session ends after this long without a request, when user-svc refuses to refresh it (revoked,
    # its refresh token lapsed, past user-svc's ADMIN_SESSION_MAX_S), or at sign-out: staff sign in again.
    console_idle_timeout_s: int = Field(default=900, ge=60, le=86_400)
    # The staff token is refreshed silently (user-svc POST /v1/admin/sessions/refresh) on the first request
    # when it has less than this left. The test stack sets it near the token's lifetime so every console
    # test runs through refreshes.
    console_refresh_ahead_s: int = Field(default=60, ge=0, le=86_400)
    # Secure cookies: always in production (served behind TLS); elsewhere when the request came over https.
    console_secure_cookies: bool = False
    console_poll_s: int = Field(default=15, ge=2, le=600)
    backend_timeout_s: float = Field(default=10.0, gt=0)
    # The console's own database: the staff sessions every replica shares (console/sessions.py).
    console_database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/pb_console"
    # Encrypts the staff tokens held in that database; production refuses the placeholder.
    console_session_key: str = "dev-console-session-key"

    @model_validator(mode="after")
    def _refuse_placeholder_key_in_production(self) -> "ConsoleSettings":
        if self.pb_env == "production" and (
            self.console_session_key.startswith("dev-") or len(self.console_session_key) < 32
        ):
            raise ValueError(
                "CONSOLE_SESSION_KEY holds a placeholder; set a random one of 32+ characters in production"
            )
        return self

    @property
    def force_secure(self) -> bool:
        return self.console_secure_cookies or self.pb_env == "production"
