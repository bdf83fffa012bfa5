"""Where a stack's PostgreSQL, Kafka and MQTT broker run: local processes, or containers through testcontainers.

`PB_STACK_BACKEND=auto|local|containers` (default: `auto` for the test stack, `local` for the run stack, whose
benchmark measures the local processes):

- `local`: PostgreSQL (a system server or the private cluster), Mosquitto and tansu as processes of this machine.
- `containers`: PostgreSQL, Apache Kafka (KRaft) and Mosquitto as containers (stacklib.containers), so the same
  tests also run against the real Apache Kafka; refused with the reason when no Docker engine answers.
- `auto`: containers when a Docker engine answers the ping within a second and testcontainers is installed,
  else local. The choice and its reason are printed on `up` and kept in the stack's stack.json.

Standard library only (stack.py runs before the virtualenv exists)."""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from stacklib.common import Stack, StackError

BACKENDS = ("auto", "local", "containers")
DEFAULT_SOCKET = "/var/run/docker.sock"
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "local" or "containers"
    reason: str


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine_address(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def docker_engine_problem(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the Docker engine at `address` (unix:///path or tcp://host:port) answers `GET /_ping` with OK
    within `timeout_s`; else why not, in a few words."""
    parsed = urlparse(address)
    try:
        if parsed.scheme == "unix":
            if not os.path.exists(parsed.path):
                return f"no socket at {parsed.path}"
            connection: http.client.HTTPConnection = _UnixConnection(parsed.path, timeout_s)
        elif parsed.scheme in ("tcp", "http"):
            host, port = parsed.hostname or "127.0.0.1", parsed.port or 2375
            connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        else:
            return f"unsupported DOCKER_HOST {address!r} (unix:// or tcp://)"
        try:
            connection.request("GET", "/_ping")
            response = connection.getresponse()
            body = response.read(64)
        finally:
            connection.close()
    except OSError as exc:
        return f"{address} did not answer ({exc.__class__.__name__}: {exc})"
    if response.status != 200 or body.strip() != b"OK":
        return f"{address} answered the ping with HTTP {response.status}"
    return None


def requested_backend(stack: Stack, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    requested = env.get("PB_STACK_BACKEND") or ("auto" if stack.name == "test" else "local")
    if requested not in BACKENDS:
        raise StackError(f"PB_STACK_BACKEND must be one of {', '.join(BACKENDS)}, not {requested!r}")
    return requested


def choose_backend(
    requested: str,
    address: str,
    engine_problem: Callable[[str], str | None] = docker_engine_problem,
    testcontainers_installed: Callable[[], bool] = lambda: True,
) -> BackendChoice:
    """The backend for `requested` (one of BACKENDS), probing the engine only when it matters."""
    if requested == "local":
        return BackendChoice("local", "PB_STACK_BACKEND=local")
    problem = engine_problem(address)
    if requested == "containers":
        if problem is not None:
            raise StackError(f"PB_STACK_BACKEND=containers, but no Docker engine answers: {problem}")
        if not testcontainers_installed():
            raise StackError("PB_STACK_BACKEND=containers, but testcontainers is not installed (`make install`)")
        return BackendChoice("containers", f"PB_STACK_BACKEND=containers; the Docker engine at {address} answers")
    if problem is not None:
        return BackendChoice("local", f"no Docker engine answers ({problem}): local processes")
    if not testcontainers_installed():
        return BackendChoice("local", f"the Docker engine at {address} answers, but testcontainers is not installed")
    return BackendChoice("containers", f"the Docker engine at {address} answers: PostgreSQL, Kafka, MQTT in containers")
