"""Device links are TLS only in every production-shaped configuration (issue 15): each Mosquitto listener
has a certificate, none is clear text, and device-svc refuses to run in production without a CA to verify
the broker with."""

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]


def _listener_blocks(conf: str) -> list[str]:
    """Each `listener` line with the lines up to the next listener or the end."""
    lines = [line.strip() for line in conf.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("listener ")]
    return ["\n".join(lines[s : [*starts, len(lines)][n + 1]]) for n, s in enumerate(starts)]


def _production_confs() -> dict[str, str]:
    compose = (ROOT / "deploy/compose/docker-compose.yml").read_text()
    entry = yaml.safe_load(compose)["services"]["mosquitto"]["entrypoint"][-1]
    k8s = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy/k8s/10-config.yaml").read_text())
        if doc and doc["metadata"]["name"] == "mosquitto-config"
    )
    return {"compose": entry, "k8s": k8s["data"]["mosquitto.conf"]}


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_production_brokers_listen_with_tls_only(where: str) -> None:
    blocks = _listener_blocks(_production_confs()[where])
    assert blocks, where
    for block in blocks:
        assert re.match(r"listener 8883\b", block), block
        for option in ("cafile", "certfile", "keyfile"):
            assert re.search(rf"^{option} \S+", block, re.MULTILINE), (where, option)


def test_device_svc_refuses_production_without_a_broker_ca() -> None:
    from device_svc.settings import Settings

    def production(ca_file: Path | None) -> Settings:
        return Settings(
            pb_env="production",
            mqtt_password=SecretStr("a-real-secret-4f9c"),
            jwt_public_key_file=Path("/run/secrets/jwt_public_key"),
            mqtt_ca_file=ca_file,
            firmware_url_key=SecretStr("a-real-secret-0b7e"),
        )

    with pytest.raises(ValueError, match="MQTT_CA_FILE"):
        production(None)
    assert production(Path("/run/secrets/mqtt_ca_cert")).mqtt_ca_file
