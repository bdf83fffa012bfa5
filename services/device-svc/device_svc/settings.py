"""device-svc settings: the kit's common ones plus the MQTT broker and the device rules."""

import socket
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "device-svc"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/pb_device"

    # The batch writers (telemetry, state) and the critical share come out of this pool (main.py).
    db_pool_size: int = 12
    # Objects allocated per device message (parsed messages, events, futures): Python's default threshold (700)
    # collected so often that it cost about a quarter of the CPU per report (issue 9, docs/capacity.md).
    gc_gen0_threshold: int = 20_000

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = "device-svc"
    mqtt_password: SecretStr = SecretStr("dev-device-svc-password")
    # `{host}` is replaced by the host name: replicas sharing one environment (compose, a Deployment) each get
    # their own client id (two clients with one id would take the broker's session from each other).
    mqtt_client_id: str = "device-svc"
    # A persistent session: the broker keeps QoS 1 device reports for us while we reconnect.
    mqtt_clean_session: bool = False
    mqtt_keepalive_s: int = 30
    mqtt_reconnect_max_s: float = 10.0
    # TLS: the broker's certificate is verified against this CA (MQTT_CA_FILE); unset means clear text,
    # which production refuses (kit settings' production check below).
    mqtt_ca_file: Path | None = None
    # The device CA (certificates/): devices' client certificates are issued with it; unset: none are.
    device_ca_cert_file: Path | None = None
    device_ca_key_file: Path | None = None
    # The seed CLI (python -m device_svc.provision) writes the broker's password file directly when these are set;
    # the service itself never does: the broker-auth sidecar beside each broker keeps it (device_svc.brokerauth).
    mqtt_password_file: Path | None = None
    mqtt_broker_pidfile: Path | None = None
    # After a credential change, the answer waits at most this long for every live broker to apply it.
    broker_sync_wait_s: float = Field(default=5.0, ge=0.0, le=30.0)

    # inbound_messages (the replay check of device messages) keeps a (device, msg_id) this long, then the
    # kit's retention job deletes it (batch sizes and interval: RETENTION_*). It must exceed any redelivery
    # of a device message (a cabinet that was offline sends what it kept; a message may come a day late).
    inbound_retention_s: float = Field(default=7 * 24 * 3600.0, ge=2 * 24 * 3600.0)

    offline_after_s: float = 60.0
    # The offline sweeper sleeps until the next online cabinet would fall silent; at most this long (it must
    # stay below offline_after_s: a cabinet that came online meanwhile is seen before it is due).
    offline_sweep_interval_s: float = 20.0
    max_clock_skew_s: float = 60.0
    min_rent_battery_pct: int = 20
    # The deadline sweeper runs at each eject command's deadline (known in-process), at most once per
    # min gap (a command fails at most that long after its deadline; billing waits 0.6 s beyond it), and
    # every interval for commands a stopped replica left behind.
    command_sweep_interval_s: float = 5.0
    command_sweep_min_gap_s: float = 0.2
    # Reports waiting per device before new ones are dropped (protects memory under a flood).
    max_pending_per_device: int = 100
    # Each device's message budget, per instance (mqtt/throttle.py): sustained rate and burst (a reconnect's
    # catch-up). Past it telemetry, presence and alarms are dropped; eject results and returns never are.
    # A real cabinet sends a heartbeat a minute; 0 turns the throttle off.
    device_message_rate_per_s: float = 20.0
    device_message_burst: int = 400
    device_throttle_sweep_s: float = 10.0
    # A message whose handling raises unexpectedly is tried this often (short back-off) before it is
    # counted, logged and acknowledged anyway (pb_device_messages_failed_total).
    message_attempts: int = 3
    # Several instances share the device load through an MQTT shared subscription
    # (`$share/<group>/pb/v1/devices/+/up/#`); unset: one instance takes every message.
    mqtt_shared_group: str | None = None

    # Banks with their own module.
    bank_offline_after_s: float = 900.0  # a module heartbeats every 5 minutes
    bank_position_max_age_s: float = 4 * 3600.0  # 7.2: idle banks report position at least every 4 h
    freshness_sweep_interval_s: float = 60.0
    bank_high_temperature_c: float = 60.0
    bank_cycle_budget: int = 1000  # 7.4.1
    bank_cycle_warning_ratio: float = 0.95  # flag for maintenance from 950 cycles
    bank_min_health_pct: int = 80
    ring_duration_s: int = 10
    # The night light (lighting/): a user within `light_max_distance_m` of a cabinet may light it for
    # `user_light_s`, at most `user_light_limit` times per `user_light_window_s`; the schedule (sunset to
    # sunrise, or an operator's override) runs every `night_light_check_s`.
    user_light_s: int = 60
    light_max_distance_m: float = 200.0
    user_light_limit: int = 5
    user_light_window_s: float = 600.0
    night_light_check_s: float = 300.0
    # Cabinet screens (screens/): a newer ad playlist is sent at once; this interval sends the shorter list
    # once an ad ended and retries cabinets the broker did not take.
    screen_sync_interval_s: float = 60.0
    # Firmware updates (firmware/; docs/firmware.md): images are signed with this Ed25519 key (PEM; devices
    # carry its public half); without it uploads are refused. Devices download through links signed with
    # `firmware_url_key` (HMAC) that expire after the TTL, at `firmware_download_base_url` (default: this
    # service's own URL, DEVICE_SVC_URL). A rollout's sweeper runs every interval (and at once on a change);
    # an update with no report for `firmware_stage_timeout_s` fails (`timeout`).
    firmware_signing_key_file: Path | None = None
    firmware_url_key: SecretStr = SecretStr("dev-device-firmware-url-key")
    firmware_url_ttl_s: int = Field(default=900, ge=30, le=86_400)
    firmware_download_base_url: str | None = None
    firmware_sweep_interval_s: float = Field(default=5.0, gt=0)
    firmware_stage_timeout_s: float = Field(default=300.0, gt=0)
    # Maintenance tasks (device_svc/maintenance): opened from current conditions every interval; a cabinet
    # silent this long gets one.
    maintenance_scan_interval_s: float = 30.0
    maintenance_cabinet_offline_after_s: float = 1800.0
    # Heartbeats and bank reports are written in batches (one transaction each): at most this many
    # messages per batch, by this many writers at once.
    telemetry_batch_max: int = 500
    telemetry_batch_writers: int = 2
    # Cabinets' status and the hello / inventory snapshots that agree with the registry (a connect
    # storm), likewise (telemetry/snapshots.py).
    state_batch_max: int = 500
    state_batch_writers: int = 2
    # Database transactions at once for critical messages (eject results, returns, slot alarms): their
    # own share of the pool, so no backlog of other messages holds them up (mqtt/intake.py).
    critical_concurrency: int = 4
    # Bulk events (telemetry, presence, refusals) relayed on their own outbox lane (kit.outbox).
    outbox_split_lanes: bool = True

    @field_validator("mqtt_client_id")
    @classmethod
    def _client_id_per_host(cls, value: str) -> str:
        return value.replace("{host}", socket.gethostname())

    @model_validator(mode="after")
    def _tls_in_production(self) -> "Settings":
        if self.pb_env == "production" and self.mqtt_ca_file is None:
            raise ValueError("MQTT_CA_FILE must be set in production: device links are TLS only")
        return self
