"""The production-shaped deployment validates here without a Docker engine or a cluster (issue 17): the compose
file through Debian's `docker-compose config` (schema and interpolation), the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate, offline), the Strimzi resources against the fields Strimzi's API
reference documents as required (no CRD schema is kept here), the Dockerfile against the rules we hold it to
(no Dockerfile linter installs from the registries we reach), and every service's own Settings class against
the environment each deployment gives it in production. Nothing is built or started."""

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from contracts.topics import Topic

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SERVICES = sorted(p.name for p in (ROOT / "services").glob("*-svc") if (p / "pyproject.toml").is_file())
KUBERNETES_VERSION = "1.31.0"
PROBE_TOPIC = "pb.ops.probe"
# What an operator exports before `docker compose up` (docker-compose.yml's header); the values are fake.
COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "pg-0f3a9c",
    "MQTT_DEVICE_SVC_PASSWORD": "mqtt-7b21e4",
    "PAYMENT_NOTIFY_BASE_URL": "https://pay.example.com",
    "ALIPAY_APP_ID": "2021000000000001",
    "WECHATPAY_MCHID": "1900000109",
    "WECHATPAY_APPID": "wxd678efh567hg6787",
    "WECHATPAY_MERCHANT_SERIAL_NO": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
    "WECHATPAY_APIV3_KEY": "apiv3-0123456789abcdef0123456789",  # 32 bytes, as WeChat Pay's are
    "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0114232134912410000000000001",
    "UNIONPAY_MER_ID": "777290058110048",
    "UNIONPAY_SIGN_CERT_ID": "69629715588",
    "UNIONPAY_FRONT_URL": "https://app.example.com/paid",
    "SUPERVISION_ID_KEY": "sup-5ad8e1",
    "NOTIFY_MEDIA_SIGNING_KEY": "media-c4e7a2",
    "NOTIFY_TELEPHONY_SIGNING_KEY": "tel-83bd19",
    "ADMIN_TOTP_KEY": "totp-2e7f51",
    "DEVICE_FIRMWARE_URL_KEY": "fw-6c0d3e",
    "CONSOLE_SESSION_KEY": "console-5f1c0e9a7b3d2e4f6a8c0b1d3e5f7a9c",
}

# Secrets whose form a service checks (the rest are any text).
SECRET_VALUES = {
    "wechatpay-apiv3-key": COMPOSE_ENV["WECHATPAY_APIV3_KEY"],
    "notify-base-url": "https://pay.example.com",
    "unionpay-front-url": "https://app.example.com/paid",
    "console-session-key": COMPOSE_ENV["CONSOLE_SESSION_KEY"],
}


def _package(service: str) -> str:
    return service.replace("-", "_")


def _settings_accept(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own Settings, read from exactly this environment (nothing of the test process's)."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = importlib.import_module(f"{_package(service)}.settings").Settings()
    assert settings.pb_env == "production", service
    if service == "asset-credit-svc":  # production takes money through the real adapters
        channels = ("alipay", "wechat", "bank_card")
        assert [settings.provider_for(c) for c in channels] == ["alipay", "wechatpay", "unionpay"]
        assert str(settings.alipay_app_private_key_file).startswith(("/run/secrets/", "/etc/pb/payments/"))


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose (Debian's package) is missing: `make install` installs it"
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        env={"PATH": os.environ.get("PATH", ""), **COMPOSE_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_refuses_to_start_without_its_secrets() -> None:
    tool = shutil.which("docker-compose")
    assert tool
    env = {"PATH": os.environ.get("PATH", ""), **COMPOSE_ENV}
    del env["WECHATPAY_APIV3_KEY"]
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "WECHATPAY_APIV3_KEY" in result.stderr


def test_compose_runs_three_kraft_brokers_and_creates_replicated_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    brokers = sorted(name for name in services if re.fullmatch(r"kafka-\d", name))
    assert brokers == ["kafka-1", "kafka-2", "kafka-3"]
    assert services["emulator"]["profiles"] == ["emulator"]  # the same image runs the device emulator
    voters = {services[b]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    for broker in brokers:
        env = services[broker]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
    assert len({services[b]["environment"]["KAFKA_NODE_ID"] for b in brokers}) == 3
    init = " ".join(services["kafka-init"]["command"])
    assert "--replication-factor 3" in init and "--min-insync-replicas 2" in init
    assert "python -m contracts.topics" in init


def test_compose_gives_every_service_the_settings_it_needs_in_production(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    for service in SERVICES:
        spec = services[service]
        replicas = spec.get("deploy", {}).get("replicas", 1)
        assert replicas == 2, service
        assert "healthcheck" in spec, service
        env = {k: str(v) for k, v in spec["environment"].items()}
        assert env["PB_ENV"] == "production"
        _settings_accept(service, env, monkeypatch)


# --------------------------------------------------------------------------- kubernetes


def _k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _strimzi(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith("kafka.strimzi.io/")


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    docs = [doc for doc in _k8s_documents() if not _strimzi(doc)]
    assert len(docs) > 10
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strimzi_resources_have_the_documented_required_fields() -> None:
    """Fields the Strimzi API reference (v1beta2) marks required, and what we promise on top: KRaft with node
    pools, three dual-role nodes, replication 3 / min ISR 2, one KafkaTopic per contract topic."""
    docs = [doc for doc in _k8s_documents() if _strimzi(doc)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert set(by_kind) == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    (kafka,) = by_kind["Kafka"]
    cluster = kafka["metadata"]["name"]
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    listeners = kafka["spec"]["kafka"]["listeners"]
    for listener in listeners:
        assert {"name", "port", "type", "tls"} <= set(listener), listener
        assert re.fullmatch(r"[a-z0-9]{1,11}", listener["name"])
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafka"]["config"]["default.replication.factor"] == 3
    assert "zookeeper" not in kafka["spec"]
    (pool,) = by_kind["KafkaNodePool"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert pool["spec"]["replicas"] == 3
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["storage"]["type"] in {"jbod", "persistent-claim", "ephemeral"}
    topics = {}
    for topic in by_kind["KafkaTopic"]:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", topic["metadata"]["name"])
        spec = topic["spec"]
        assert spec["partitions"] >= 3 and spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == 2
        topics[spec.get("topicName", topic["metadata"]["name"])] = spec
    expected = {t.value for t in Topic} | {PROBE_TOPIC}
    assert set(topics) == expected, (
        f"deploy/k8s/21-kafka.yaml needs a KafkaTopic per contract topic: missing {sorted(expected - set(topics))}, "
        f"unknown {sorted(set(topics) - expected)}"
    )
    for user in by_kind["KafkaUser"]:
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["spec"]["authentication"]["type"] in {"tls", "tls-external", "scram-sha-512"}
        for acl in user["spec"]["authorization"]["acls"]:
            assert {"type", "name"} <= set(acl["resource"]) and acl["operations"]


def _env_of(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    env = dict(config) if any("configMapRef" in e for e in container.get("envFrom", [])) else {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = f"{entry['valueFrom']['fieldRef']['fieldPath']}-from-the-pod"
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = SECRET_VALUES.get(ref["key"], f"{ref['name']}-{ref['key']}-from-secret")
    return env


def test_kubernetes_deployments_are_production_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = _k8s_documents()
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pb-config"]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(deployments) == {*SERVICES, "mosquitto", "console"}
    for service in SERVICES:
        deployment = deployments[service]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == service]
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in container, (service, probe)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["resources"]["requests"] if "resources" in c else c["name"] in {"migrate", "mqtt-auth"}, c["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert deployment["spec"]["replicas"] == 2
        assert service in pdbs, service
        assert hpas[service]["spec"]["minReplicas"] >= 2
        _settings_accept(service, _env_of(container, config["data"]), monkeypatch)
        assert not pod.get("shareProcessNamespace"), f"{service} needs nothing of the broker's pod"


def _console_settings_accept(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's own settings read from exactly this environment; the placeholder session key refused."""
    from console.settings import ConsoleSettings

    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ConsoleSettings()
    assert settings.pb_env == "production" and settings.force_secure
    assert settings.console_database_url.endswith("/pb_console")
    monkeypatch.setenv("CONSOLE_SESSION_KEY", "dev-console-session-key")
    with pytest.raises(ValueError, match="CONSOLE_SESSION_KEY"):
        ConsoleSettings()


def test_the_console_runs_two_replicas_on_its_own_session_database(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose and Kubernetes run the console twice: its replicas share the staff sessions in pb_console."""
    spec = compose["services"]["console"]
    assert spec["deploy"]["replicas"] == 2 and "healthcheck" in spec
    assert "alembic upgrade head" in " ".join(spec["command"]) and spec["working_dir"] == "/app/console"
    assert "pb_console" in " ".join(compose["services"]["postgres-init"]["command"])
    _console_settings_accept({k: str(v) for k, v in spec["environment"].items()}, monkeypatch)

    docs = _k8s_documents()
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pb-config"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "console"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert [c["command"] for c in pod["initContainers"]] == [["alembic", "upgrade", "head"]]
    env = _env_of(container, config["data"])
    env["CONSOLE_DATABASE_URL"] = "postgresql+asyncpg://pb:pw@postgres:5432/pb_console"  # the secret's value
    _console_settings_accept(env, monkeypatch)
    assert any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "console" for d in docs), (
        "the console keeps one replica through a node drain"
    )


def test_the_broker_pod_keeps_its_own_device_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker-auth sidecar beside Mosquitto (one pod, one pid namespace, one auth volume), with the settings
    it needs; device-svc replicas share an MQTT shared subscription, each with its own client id."""
    from device_svc.brokerauth.__main__ import BrokerAuthSettings

    docs = _k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    pod = deployments["mosquitto"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"mosquitto", "broker-auth"}
    sidecar = containers["broker-auth"]
    assert sidecar["command"] == ["python", "-m", "device_svc.brokerauth"]
    env = _env_of(sidecar, {})
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = BrokerAuthSettings()
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert settings.mqtt_password_file.parent.as_posix() in mounts
    device = _env_of(deployments["device-svc"]["spec"]["template"]["spec"]["containers"][0], {})
    assert device["MQTT_SHARED_GROUP"] and "{host}" in device["MQTT_CLIENT_ID"]
    assert "MQTT_PASSWORD_FILE" not in device


def test_compose_runs_the_broker_auth_sidecar_in_the_brokers_pid_namespace(compose: dict[str, Any]) -> None:
    services = compose["services"]
    sidecar = services["broker-auth"]
    assert sidecar["pid"] == "service:mosquitto"
    assert sidecar["command"] == ["python", "-m", "device_svc.brokerauth"]
    assert {"MQTT_PASSWORD_FILE", "MQTT_BROKER_PIDFILE", "DATABASE_URL"} <= set(sidecar["environment"])
    device = services["device-svc"]
    assert "pid" not in device and "volumes" not in device
    assert "{host}" in device["environment"]["MQTT_CLIENT_ID"]


# --------------------------------------------------------------------------- Dockerfile


def test_the_dockerfile_builds_a_pinned_multi_stage_non_root_image_with_a_health_check() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line.split() for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    for parts in froms:
        image = parts[1]
        assert re.search(r":\d+\.\d+\.\d+", image), f"base image not pinned to a patch release: {image}"
    assert any("requirements.lock" in line and "COPY" in line for line in lines)
    assert any(re.search(r"pip install .*-r requirements\.lock", line) for line in lines)
    assert all("--no-deps" in line for line in lines if "pip install" in line and '"$d"' in line)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    (health,) = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert "/readyz" in health
    runtime = lines[lines.index(next(line for line in lines if line.startswith("FROM ") and " AS runtime" in line)) :]
    assert not any("build-essential" in line for line in runtime), "compilers stay in the build stage"
    assert not any(":latest" in line for line in lines if line.startswith("FROM "))
    assert (ROOT / ".dockerignore").is_file()
