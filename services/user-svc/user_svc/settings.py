from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from kit.settings import ServiceSettings
from user_svc.rules import RuleViolation, check_password, normalise_admin_login

# Used only outside production (the kit refuses `dev-` secrets there), so a fresh stack has an admin.
DEV_ADMIN_LOGIN = "admin"
DEV_ADMIN_PASSWORD = "dev-admin-password"


class Settings(ServiceSettings):
    service_name: str = "user-svc"

    jwt_private_key_file: Path
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    admin_access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)

    terms_version: str = Field(default="2026-11", min_length=1, max_length=32)
    terms_text_file: Path | None = None

    # Argon2id cost (argon2-cffi's defaults are RFC 9106's low-memory profile). Each hash holds
    # `memory_kib` of RAM, so at most `password_hash_concurrency` run at once.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65_536, ge=8)
    password_hash_parallelism: int = Field(default=4, ge=1)
    password_hash_concurrency: int = Field(default=2, ge=1)

    admin_bootstrap_login: str | None = None
    admin_bootstrap_password: SecretStr | None = None

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
