"""The containers backend's parts (deploy/local/stacklib/backend.py), started through testcontainers; run by
deploy/local/stack.py with the virtualenv's interpreter (testcontainers and docker are pinned in requirements.lock).

    python containers_tasks.py up --label L --pg-port P --kafka-port K --mqtt-port M --mqtt-conf CONF --mqtt-dir DIR
        [--fresh]                    prints {"postgres": id, "kafka": id, "mosquitto": id} as JSON
    python containers_tasks.py down --label L
    python containers_tasks.py signal --name NAME [--signal HUP]   (the broker-auth sidecar's broker reload)

PostgreSQL 15 (trust authentication: a throwaway test database on this machine's ports), Apache Kafka in KRaft
mode (one combined broker and controller, advertised on 127.0.0.1) and Mosquitto 2.0 reading the stack's own
configuration, TLS files, password file and ACL from the mounted state folder. The containers outlive this process
(the stack is used by later commands): testcontainers' reaper is off, and `down` removes them by label.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# after the reaper setting above, which testcontainers reads at import
import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs

IMAGES = {
    "postgres": "postgres:15.10-bookworm",
    "kafka": "apache/kafka:3.9.1",
    "mosquitto": "eclipse-mosquitto:2.0.21",
}
LABEL = "pb.stack"
START_TIMEOUT_S = 120.0


def _kafka_env(port: int) -> dict[str, str]:
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }


def _containers(label: str) -> dict[str, Any]:
    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": f"{LABEL}={label}"})
    return {c.labels.get(f"{LABEL}.part", c.name): c for c in found}


def _start(part: str, label: str, container: DockerContainer, ready_log: str, **kwargs: Any) -> str:
    # with_kwargs replaces what an earlier call set: everything docker's `create` gets besides goes in this one
    container.with_name(f"pb-{label}-{part}").with_kwargs(labels={LABEL: label, f"{LABEL}.part": part}, **kwargs)
    container.start()
    wait_for_logs(container, ready_log, timeout=START_TIMEOUT_S)
    return str(container.get_wrapped_container().id)


def _up(args: argparse.Namespace) -> int:
    running = _containers(args.label)
    out: dict[str, str] = {}
    for part in IMAGES:
        existing = running.get(part)
        if existing is not None and existing.status == "running" and not args.fresh:
            out[part] = existing.id
            continue
        if existing is not None:
            existing.remove(force=True)
        if part == "postgres":
            container = (
                DockerContainer(IMAGES[part])
                .with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
                .with_bind_ports(5432, args.pg_port)
            )
            out[part] = _start(part, args.label, container, "database system is ready to accept connections")
        elif part == "kafka":
            container = DockerContainer(IMAGES[part]).with_envs(**_kafka_env(args.kafka_port))
            container.with_bind_ports(9092, args.kafka_port)
            out[part] = _start(part, args.label, container, "Kafka Server started")
        else:
            container = (
                DockerContainer(IMAGES[part])
                .with_volume_mapping(args.mqtt_dir, args.mqtt_dir, "rw")
                .with_bind_ports(args.mqtt_port, args.mqtt_port)
                .with_command(["mosquitto", "-c", args.mqtt_conf])
            )
            files = [docker.types.Ulimit(name="nofile", soft=65536, hard=65536)]  # one socket a device
            out[part] = _start(part, args.label, container, "running", ulimits=files)
    print(json.dumps(out))
    return 0


def _down(args: argparse.Namespace) -> int:
    for container in _containers(args.label).values():
        container.remove(force=True)
    return 0


def _signal(args: argparse.Namespace) -> int:
    docker.from_env().containers.get(args.name).kill(signal=args.signal)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="containers_tasks.py")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--label", required=True)
    up.add_argument("--pg-port", type=int, required=True)
    up.add_argument("--kafka-port", type=int, required=True)
    up.add_argument("--mqtt-port", type=int, required=True)
    up.add_argument("--mqtt-conf", required=True)
    up.add_argument("--mqtt-dir", required=True)
    up.add_argument("--fresh", action="store_true", help="replace running containers (a clean broker and database)")
    down = sub.add_parser("down")
    down.add_argument("--label", required=True)
    sig = sub.add_parser("signal")
    sig.add_argument("--name", required=True)
    sig.add_argument("--signal", default="HUP")
    args = parser.parse_args(argv)
    return {"up": _up, "down": _down, "signal": _signal}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
