"""Settings every service reads from its environment; services subclass and add their own."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "dev", "development", "test"})


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    service_name: str = "pb-service"
    pb_env: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/pb"
    db_pool_size: int = 10
    # A separate pool for the Kafka consumers (kit.app): each consumer handles one event at a time.
    db_consumer_pool_size: int = 4
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_consumer_group: str | None = None
    # A new consumer is assigned partitions about half a session timeout after it joins (seen with
    # tansu); the local stack lowers these so services are ready in about a second.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    # How often a consumer asks the broker for the cluster's metadata besides when it needs to (a leader
    # moved, a partition unknown). Every request costs the broker: at 5 s the mesh's consumers kept
    # tansu at about 0.5 % of a core at rest (issue 9). The topics exist before the services start.
    kafka_metadata_max_age_ms: int = Field(default=300_000, ge=1_000)
    # How long a consumer's fetch may wait at the broker for data (kit.kafka.FetchPacing). Apache Kafka
    # answers a waiting fetch as soon as data arrives, so there one long wait (500 ms, its default) costs
    # neither latency nor CPU, and these defaults are the production ones. tansu 0.6 (the local broker)
    # never wakes a waiting fetch: it re-reads its storage at half the remaining wait (250, 375, 500 ms of a
    # 500 ms wait), so a record waits up to half the wait and every re-read costs CPU. The local stack
    # therefore sets `kafka_fetch_flow_wait_ms` (50): a consumer fetches with it while records flow (until
    # `kafka_fetch_flow_s` after the last one) and with its latency class's wait at rest.
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0)  # critical consumers at rest
    kafka_background_fetch_max_wait_ms: int = Field(default=500, ge=0)  # the others and revocations, at rest
    kafka_fetch_flow_wait_ms: int | None = Field(default=None, ge=0)  # None: the rest wait always
    # Background consumers' wait while records flow (None: `kafka_fetch_flow_wait_ms`). No user holds a
    # request open for their events, and with tansu every consumer that fetches with a short wait while
    # records flow costs the broker and itself a fetch per wait.
    kafka_background_fetch_flow_wait_ms: int | None = Field(default=None, ge=0)
    kafka_fetch_flow_s: float = Field(default=10.0, ge=0)
    # A consumer commits its offsets at most this often (0: after every fetch that brought events), only
    # ever for events whose effects committed: a restart or a rebalance reads the rest again as duplicates.
    # Each commit is a request the broker answers (issue 9: about 0.3 ms of CPU between the two).
    kafka_commit_interval_s: float = Field(default=1.0, ge=0)
    # The relay is woken in-process by every commit that wrote events; the poll only finds what that
    # missed (a relay that failed, rows written by another replica whose relay is down).
    outbox_poll_interval_s: float = 5.0
    # Relay bulk events (contracts.topics.BULK_TOPICS) on a lane of their own (kit.outbox); for a
    # service that writes them in volume, with the outbox's per-lane partial indexes in its migrations.
    outbox_split_lanes: bool = False
    # Retention (kit.retention): published outbox rows and done processed-event ids older than the window
    # are deleted every interval (0: never), in batches. The window must exceed any redelivery (the
    # broker's retention): an id forgotten earlier would let a redelivered event apply twice.
    retention_window_s: float = Field(default=7 * 24 * 3600, ge=3600)
    retention_interval_s: float = Field(default=600.0, ge=0)
    retention_batch: int = Field(default=5000, ge=1)
    retention_max_batches: int = Field(default=20, ge=1)
    # Broker loss (kit.broker_loss): every `broker_loss_check_s` (0: never) each service checks that the broker
    # still holds what it acknowledged; if not, the outbox rows published in the replay window go out again.
    # The window must not exceed the retention window, or a copy could find its processed id forgotten.
    # (tansu reports a partition's end offset as its last batch's FIRST offset + 1: the watch compares it with
    # the lowest offset of each publish, so a multi-record batch is no false alarm; see kit.broker_loss.)
    broker_loss_check_s: float = Field(default=5.0, ge=0)
    # When > 0, that same watch creates every contract topic the broker lacks with this many partitions,
    # before anything is published again: a broker that restarted empty (tansu) must not get them from
    # a client's request with its own default count (kit.kafka never asks for that). 0 (production): the
    # topics are provisioned by the setup job, and services hold no right to create them.
    kafka_topic_partitions: int = Field(default=0, ge=0)
    broker_loss_replay_window_s: float = Field(default=3600.0, ge=60)
    # The garbage collector (kit.app): with a threshold set, the objects alive after startup are frozen out of
    # every collection and the youngest generation is collected after this many allocations instead of
    # Python's 700. A service that allocates per device message (device-svc) spent a quarter of its CPU less
    # with 20,000 (issue 9, docs/capacity.md); 0 keeps Python's defaults.
    gc_gen0_threshold: int = Field(default=0, ge=0)
    # OpenTelemetry traces (kit.tracing): off unless a collector's OTLP/HTTP base URL is set (the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT variable, e.g. http://otel-collector:4318); the share of new traces kept.
    otel_exporter_otlp_endpoint: str | None = None
    otel_traces_sampler_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "pb-user-svc"
    jwt_audience: str = "pb"
    # Instant access-token revocation (kit.revocation): every process reads user.sessions.v1 itself and
    # on start reads back this far (longer than any access token lives); startup waits at most the timeout.
    token_revocation_listener: bool = True
    token_revocation_lookback_s: int = 1800
    token_revocation_startup_timeout_s: float = 10.0

    # Request rate limits (kit.ratelimit): `<requests>/<seconds>` per class and subject (or address),
    # all multiplied by the scale (the local stacks set 100 so tests and benchmarks are not throttled).
    rate_limit_enabled: bool = True
    rate_limit_scale: float = Field(default=1.0, gt=0)
    rate_limit_default: str = "600/60"
    rate_limit_login: str = "10/60"  # password, SMS-code, staff and API-key logins, by address
    rate_limit_registration: str = "20/600"
    rate_limit_sms: str = "10/600"  # codes sent by SMS or e-mail (user-svc keeps its per-number limits too)
    rate_limit_borrow: str = "10/60"
    rate_limit_upload: str = "20/60"
    rate_limit_export: str = "10/60"
    # Proxies whose X-Forwarded-For is believed (CIDRs, JSON list: '["10.0.0.0/8"]'); none by default.
    rate_limit_trusted_proxies: list[str] = Field(default_factory=list)
    rate_limit_cleanup_interval_s: float = Field(default=60.0, gt=0)
    # Request body sizes (kit.bodylimit): any route, and upload routes (photos, images, bulk imports).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    user_svc_url: str = "http://127.0.0.1:8001"
    device_svc_url: str = "http://127.0.0.1:8002"
    billing_svc_url: str = "http://127.0.0.1:8003"
    asset_svc_url: str = "http://127.0.0.1:8004"
    notify_svc_url: str = "http://127.0.0.1:8005"
    analytics_svc_url: str = "http://127.0.0.1:8006"

    @field_validator(
        "rate_limit_default",
        "rate_limit_login",
        "rate_limit_registration",
        "rate_limit_sms",
        "rate_limit_borrow",
        "rate_limit_upload",
        "rate_limit_export",
    )
    @classmethod
    def _rate_limit_spec(cls, value: str) -> str:
        from kit.ratelimit import Limit

        Limit.parse(value)
        return value

    @field_validator("rate_limit_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        from kit.addresses import parse_networks

        parse_networks(value)
        return value

    @property
    def consumer_group(self) -> str:
        return self.kafka_consumer_group or self.service_name

    @model_validator(mode="after")
    def _replay_within_retention(self) -> "ServiceSettings":
        if self.broker_loss_replay_window_s > self.retention_window_s:
            raise ValueError("BROKER_LOSS_REPLAY_WINDOW_S must not exceed RETENTION_WINDOW_S")
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets_in_production(self) -> "ServiceSettings":
        if self.pb_env != "production":
            return self
        for name, value in self:
            if isinstance(value, SecretStr) and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name.upper()} holds a placeholder secret; set a real one in production")
            if isinstance(value, SecretStr) and value.get_secret_value().startswith("dev-"):
                raise ValueError(f"{name.upper()} holds a development secret; set a real one in production")
        if self.jwt_public_key_file is None:
            raise ValueError("JWT_PUBLIC_KEY_FILE must be set in production")
        return self
