import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from analytics_svc.hotspots.rules import HotspotRules
from analytics_svc.webhooks.service import Policy as WebhookPolicy
from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "analytics-svc"
    # The time zone statistics are reported in (hour of day, day boundaries): env STATS_TIMEZONE.
    stats_timezone: str = "Asia/Shanghai"
    # A bank rented for longer than this counts as lost in banks per region.
    lost_after_hours: int = 72
    # Events per fetch, applied in one transaction (analytics_svc/ingest_batch.py). Half the cost of a fetch of
    # 1,000 was outside the applier (fetch, parse, dedupe): 5,000 per fetch measured ~4x the rate (docs/analytics.md).
    ingest_batch_max: int = 5000
    # A fetch of 5,000 events lives through its transaction (envelopes, rows, parameters): with Python's default
    # threshold (700) the collector walked them again and again, promoted, in ever larger collections: about half
    # the consumer's CPU at 20,000 rentals; 200,000 cut it from 8.5 to 4.0 s (docs/analytics.md, kit.app.tune_gc).
    gc_gen0_threshold: int = 200_000
    # How often the hourly rollup is rebuilt for the hours facts changed in (0: never, tests drive it).
    rollup_interval_s: float = 2.0
    # The battery's cycle budget (7.4.1) and the share of it from which a bank is "approaching" its limit.
    bank_cycle_budget: int = 1000
    bank_cycle_warning_ratio: float = 0.95
    # Hotspot alerts (analytics_svc/hotspots): every cell evaluated this often (0: never, tests drive it).
    hotspot_interval_s: float = 30.0
    hotspot_window_s: float = 3600.0
    hotspot_min_demand: int = 3
    hotspot_dry_max_banks: int = 1
    hotspot_full_max_free: int = 1
    hotspot_radius: int = 3
    # Partner webhooks (analytics_svc/webhooks): due deliveries sent every interval (0: never, tests drive it).
    webhook_interval_s: float = 1.0
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 2.0
    webhook_backoff_max_s: float = 3600.0
    # Partner URLs must resolve to public addresses (webhooks/egress.py); local and test stacks allow
    # loopback so a receiver on this machine can be used. Refused in production.
    webhook_allow_loopback: bool = False
    # Deliveries per minute to one partner (all its subscriptions), unless staff set its own.
    webhook_partner_per_minute: int = Field(default=600, ge=1)
    # Government supervision interface (MDS 2.0 Provider API, docs/supervision.md).
    mds_provider_id: uuid.UUID = uuid.UUID("5f7114d1-4091-46ee-b492-e55875f7de00")
    mds_provider_name: str = "Power bank platform"
    # Keys the HMAC that turns rental ids into trip ids: rotate it and every trip id changes.
    supervision_id_key: SecretStr = SecretStr("dev-supervision-id-key")
    # An hour is answered (200) this long after it ended; until then 202 (late events may still land).
    supervision_hour_lag_s: int = 60
    supervision_ttl_ms: int = 60_000
    # Erasure (analytics_svc/erasure.py): a deregistered user's facts get a pseudonym this long after the
    # deregistration (their last rental's facts have arrived by then), checked this often with the retention
    # of positions below (0: never).
    erasure_delay_s: float = 3600.0
    erasure_interval_s: float = 600.0
    # Bank module positions (`bank_position_facts`, the supervision feed's /telemetry) are deleted this long
    # after they were reported (analytics_svc/retention.py, in the erasure job; docs/accounts.md "Retention").
    position_retention_s: float = Field(default=90 * 86_400, ge=86_400)

    @model_validator(mode="after")
    def _no_loopback_webhooks_in_production(self) -> "Settings":
        if self.pb_env == "production" and self.webhook_allow_loopback:
            raise ValueError("WEBHOOK_ALLOW_LOOPBACK is for local and test stacks, not production")
        return self

    @field_validator("stats_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.stats_timezone)

    @property
    def hotspot_rules(self) -> HotspotRules:
        return HotspotRules(
            window_s=self.hotspot_window_s,
            min_demand=self.hotspot_min_demand,
            dry_max_banks=self.hotspot_dry_max_banks,
            full_max_free=self.hotspot_full_max_free,
            radius=self.hotspot_radius,
        )

    @property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(
            timeout_s=self.webhook_timeout_s,
            max_attempts=self.webhook_max_attempts,
            backoff_s=self.webhook_backoff_s,
            backoff_max_s=self.webhook_backoff_max_s,
            allow_loopback=self.webhook_allow_loopback,
            partner_per_minute=self.webhook_partner_per_minute,
        )
