"""The containers backend (stacklib.backend): PostgreSQL, Apache Kafka and Mosquitto as containers started through
testcontainers (deploy/local/containers_tasks.py, run with the virtualenv's interpreter), on the stack's own
ports, so everything else (databases, topics, env file, services, tests) is the same as with local processes."""

from __future__ import annotations

import hashlib
import json
import time

from stacklib.common import HERE, STATE_ROOT, VENV_PY, PgTarget, Stack, StackError, _env_int, say
from stacklib.kafka import setup_topics
from stacklib.mosquitto import check_mosquitto, mosquitto_paths, prepare_broker_files, render_conf
from stacklib.postgres import pg_usable
from stacklib.procs import run

CONTAINERS_TASKS = HERE / "containers_tasks.py"
PG_READY_S = 60.0


def container_label(stack: Stack) -> str:
    """Unique per checkout and stack: two clones on one engine do not share containers."""
    return f"{stack.name}-{hashlib.sha256(str(STATE_ROOT).encode()).hexdigest()[:8]}"


def container_pg_port(stack: Stack) -> int:
    return _env_int(f"PB_{stack.name.upper()}_CONTAINER_PG_PORT", stack.port_base + 50)


def broker_reload_command(stack: Stack) -> str:
    """What the broker-auth sidecar runs instead of signalling a local pid (MQTT_BROKER_RELOAD_COMMAND)."""
    name = f"pb-{container_label(stack)}-mosquitto"
    return f"{VENV_PY} {CONTAINERS_TASKS} signal --name {name} --signal HUP"


def start_containers(stack: Stack, password: str) -> PgTarget:
    prepare_broker_files(stack, password, render_conf(stack, in_container=True))
    pg_port = container_pg_port(stack)
    cmd = [str(VENV_PY), str(CONTAINERS_TASKS), "up", "--label", container_label(stack)]
    cmd += ["--pg-port", str(pg_port), "--kafka-port", str(stack.kafka_port), "--mqtt-port", str(stack.mqtt_port)]
    cmd += ["--mqtt-conf", str(mosquitto_paths(stack)["conf"]), "--mqtt-dir", str(stack.mqtt_dir)]
    if stack.fresh:
        cmd.append("--fresh")
    result = run(cmd, check=False, capture=True)
    if result.returncode != 0:
        raise StackError(f"starting the containers failed:\n{(result.stderr or result.stdout).strip()[-2000:]}")
    ids = json.loads(result.stdout.strip().splitlines()[-1])
    say(f"containers up: {', '.join(f'{part} {cid[:12]}' for part, cid in ids.items())}", stack.name)
    target = PgTarget("container", "127.0.0.1", pg_port, "postgres")
    deadline = time.monotonic() + PG_READY_S
    while not pg_usable(target.host, target.port, target.user):
        if time.monotonic() > deadline:
            raise StackError(f"the PostgreSQL container on 127.0.0.1:{pg_port} did not answer in {PG_READY_S:.0f} s")
        time.sleep(0.5)
    check_mosquitto(stack, password)
    setup_topics(stack)
    return target


def stop_containers(stack: Stack) -> None:
    run([str(VENV_PY), str(CONTAINERS_TASKS), "down", "--label", container_label(stack)], check=False, capture=True)
    say("containers removed", stack.name)
