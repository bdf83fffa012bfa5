"""The test stack's backend (deploy/local/stacklib/backend.py): local processes, or PostgreSQL, Apache Kafka and
Mosquitto as containers through testcontainers where a Docker engine answers (issue 17).

The selection runs everywhere. The container path (test_the_containers_backend_starts_real_parts) needs a Docker
engine: it is skipped, with the probe's reason, only when none answers (as on the project's own machines)."""

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

from stacklib.backend import (  # noqa: E402
    BackendChoice,
    choose_backend,
    docker_engine_problem,
    engine_address,
    requested_backend,
)
from stacklib.common import StackError, stack_from_env  # noqa: E402


def _no_engine(_: str) -> str:
    return "no socket at /var/run/docker.sock"


def _engine(_: str) -> None:
    return None


def test_local_is_taken_without_probing() -> None:
    def probe(_: str) -> str | None:
        raise AssertionError("local must not probe the engine")

    assert choose_backend("local", "unix:///x", probe) == BackendChoice("local", "PB_STACK_BACKEND=local")


def test_auto_falls_back_to_local_processes_when_no_engine_answers_and_says_why() -> None:
    choice = choose_backend("auto", "unix:///var/run/docker.sock", _no_engine)
    assert choice.name == "local" and "no Docker engine answers" in choice.reason and "docker.sock" in choice.reason


def test_auto_takes_containers_when_an_engine_answers_and_testcontainers_is_there() -> None:
    assert choose_backend("auto", "unix:///s", _engine).name == "containers"
    lacking = choose_backend("auto", "unix:///s", _engine, testcontainers_installed=lambda: False)
    assert lacking.name == "local" and "testcontainers is not installed" in lacking.reason


def test_containers_asked_for_without_an_engine_is_refused_with_the_reason() -> None:
    with pytest.raises(StackError, match="no Docker engine answers: no socket"):
        choose_backend("containers", "unix:///var/run/docker.sock", _no_engine)
    assert choose_backend("containers", "unix:///s", _engine).name == "containers"


def test_the_default_is_auto_for_the_test_stack_and_local_for_the_run_stack() -> None:
    assert requested_backend(stack_from_env("test"), {}) == "auto"
    assert requested_backend(stack_from_env("run"), {}) == "local"
    assert requested_backend(stack_from_env("run"), {"PB_STACK_BACKEND": "containers"}) == "containers"
    with pytest.raises(StackError, match="PB_STACK_BACKEND must be one of"):
        requested_backend(stack_from_env("test"), {"PB_STACK_BACKEND": "docker"})
    assert engine_address({"DOCKER_HOST": "tcp://10.0.0.2:2375"}) == "tcp://10.0.0.2:2375"
    assert engine_address({}) == "unix:///var/run/docker.sock"


@pytest.fixture
def fake_engine() -> Iterator[str]:
    """An HTTP server answering the Docker engine's ping, on a free loopback port."""

    class Ping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"OK" if self.path == "/_ping" else b"?"
            self.send_response(200 if self.path == "/_ping" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_the_probe_reads_the_engines_ping_and_gives_up_quickly(fake_engine: str, tmp_path: Path) -> None:
    assert docker_engine_problem(fake_engine) is None
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert "did not answer" in (docker_engine_problem(f"tcp://127.0.0.1:{closed}", 0.5) or "")
    assert docker_engine_problem(f"unix://{tmp_path / 'docker.sock'}") == f"no socket at {tmp_path / 'docker.sock'}"


def test_the_containers_backend_starts_real_parts(tmp_path: Path) -> None:
    """Through testcontainers: PostgreSQL answers psql, Apache Kafka takes the contract topics and a produce/consume
    probe, Mosquitto reads the mounted configuration and listens on its published port. Skipped only when no
    Docker engine answers."""
    problem = docker_engine_problem(engine_address())
    if problem is not None:
        pytest.skip(f"no Docker engine answers ({problem}): the containers backend cannot run here")
    venv_py = ROOT / ".venv" / "bin" / "python"
    tasks = ROOT / "deploy" / "local" / "containers_tasks.py"
    label = f"pytest-{tmp_path.name[-8:]}"
    mqtt_dir = tmp_path / "mosquitto"
    mqtt_dir.mkdir()
    conf = mqtt_dir / "mosquitto.conf"
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    pg_port, kafka_port, mqtt_port = ports
    cmd = [str(venv_py), str(tasks), "up", "--label", label, "--pg-port", str(pg_port)]
    cmd += ["--kafka-port", str(kafka_port), "--mqtt-port", str(mqtt_port)]
    cmd += ["--mqtt-conf", str(conf), "--mqtt-dir", str(mqtt_dir), "--fresh"]
    conf.write_text(f"listener {mqtt_port}\nallow_anonymous true\nlog_dest stderr\n")
    try:
        started = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert started.returncode == 0, started.stderr[-2000:]
        assert set(json.loads(started.stdout.strip().splitlines()[-1])) == {"postgres", "kafka", "mosquitto"}
        psql = ["psql", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "-tAc", "SELECT 1"]
        assert subprocess.run(psql, capture_output=True, text=True, timeout=30).stdout.strip() == "1"
        setup = [str(venv_py), str(ROOT / "deploy" / "local" / "venv_tasks.py"), "kafka-setup"]
        setup += ["--bootstrap", f"127.0.0.1:{kafka_port}", "--probe-topic", "pb.test.probe", "pb.test.topic"]
        done = subprocess.run(setup, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        with socket.create_connection(("127.0.0.1", mqtt_port), timeout=5):
            pass
    finally:
        subprocess.run([str(venv_py), str(tasks), "down", "--label", label], capture_output=True, timeout=120)
