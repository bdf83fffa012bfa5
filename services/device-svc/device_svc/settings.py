"""device-svc settings: the kit's common ones plus the MQTT broker and the device rules."""

from pathlib import Path

from pydantic import SecretStr

from kit.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "device-svc"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/pb_device"

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = "device-svc"
    mqtt_password: SecretStr = SecretStr("dev-device-svc-password")
    mqtt_client_id: str = "device-svc"
    # A persistent session: the broker keeps QoS 1 device reports for us while we reconnect.
    mqtt_clean_session: bool = False
    mqtt_keepalive_s: int = 30
    mqtt_reconnect_max_s: float = 10.0
    mqtt_password_file: Path | None = None
    mqtt_broker_pidfile: Path | None = None

    offline_after_s: float = 60.0
    offline_sweep_interval_s: float = 2.0
    max_clock_skew_s: float = 60.0
    min_rent_battery_pct: int = 20
    command_sweep_interval_s: float = 0.2
    # Reports waiting per device before new ones are dropped (protects memory under a flood).
    max_pending_per_device: int = 100
