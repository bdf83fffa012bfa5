from pydantic import Field, SecretStr

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notify-svc"
    # How often the SLA sweeper looks for overdue tickets when no deadline it knows is due (0: never).
    ticket_sla_sweep_interval_s: float = 60.0
    # Notice images: served through URLs signed with this key (HMAC-SHA256) that expire after the TTL.
    media_signing_key: SecretStr = SecretStr("dev-notify-media-signing-key")
    media_url_ttl_s: int = Field(default=900, ge=10, le=7 * 24 * 3600)
    notice_image_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    notice_max_images: int = Field(default=4, ge=0, le=20)
    # Push: the worker sends queued pushes when woken after a commit, else every this many seconds (0: never).
    push_poll_interval_s: float = 5.0
    push_sandbox_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Campaigns: recipients per batch (one transaction each); the sender looks for due campaigns when rung
    # (a schedule), else every this many seconds (0: never), and yields to other jobs every budget.
    campaign_batch_size: int = Field(default=1000, ge=1, le=5000)
    campaign_poll_interval_s: float = 5.0
    campaign_budget_s: float = Field(default=1.0, gt=0)
    # Human voice service: the hotline the app shows, and the key the telephony provider signs its
    # outcome callbacks with (HMAC-SHA256; the sandbox provider signs with it too).
    support_hotline: str = "400-800-1234"
    support_hotline_hours: str = "08:00-22:00 (UTC+8)"
    telephony_signing_key: SecretStr = SecretStr("dev-notify-telephony-signing-key")
    # Photos on reports: checked by content like notice images, at most this many of at most this size.
    report_photo_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    report_max_photos: int = Field(default=3, ge=0, le=10)
