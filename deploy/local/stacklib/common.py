"""Paths, the services and stacks, output helpers and stack env files: what every part of the stack tool shares."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import string
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # deploy/local
STACK_TOOL = HERE / "stack.py"
ROOT = HERE.parents[1]
STATE_ROOT = ROOT / ".state"
VENV = Path(os.environ.get("PB_VENV", str(ROOT / ".venv")))
VENV_PY = VENV / "bin" / "python"
VENV_TASKS = HERE / "venv_tasks.py"
LOCK_FILE = ROOT / "requirements.lock"
BOOTSTRAP_FILE = ROOT / "requirements-bootstrap.txt"
INSTALL_STAMP = VENV / ".pb-install-stamp"
MQTT_SERVICE_USER = "device-svc"
KAFKA_PARTITIONS = 3
KAFKA_PROBE_TOPIC = "pb.local.stack-probe"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")


class StackError(Exception):
    """A failure the user can act on; printed without a traceback."""


# --------------------------------------------------------------------------- output


def say(message: str, stack: str | None = None) -> None:
    prefix = f"stack[{stack}]" if stack else "stack"
    print(f"{prefix}: {message}", file=sys.stderr, flush=True)


def warn(message: str, stack: str | None = None) -> None:
    say(f"WARNING: {message}", stack)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    content = path.read_text(errors="replace").splitlines()
    return "\n".join(f"    | {line}" for line in content[-lines:])


# --------------------------------------------------------------------------- services and stacks


@dataclass(frozen=True)
class Service:
    name: str  # "asset-credit"
    directory: str  # "asset-credit-svc" under services/
    package: str  # "asset_credit_svc"
    env_prefix: str  # "ASSET" -> ASSET_SVC_URL, ASSET_DATABASE_URL
    db_suffix: str  # "asset" -> pb_asset / pb_test_asset; "" for a process without a database
    port_offset: int
    parent: str = "services"  # the folder holding `directory` ("" for a top-level folder)

    @property
    def path(self) -> Path:
        return ROOT / self.parent / self.directory if self.parent else ROOT / self.directory

    def exists(self) -> bool:
        return (self.path / self.package / "main.py").is_file()


SERVICES: tuple[Service, ...] = (
    Service("user", "user-svc", "user_svc", "USER", "user", 1),
    Service("device", "device-svc", "device_svc", "DEVICE", "device", 2),
    Service("billing", "billing-svc", "billing_svc", "BILLING", "billing", 3),
    Service("asset-credit", "asset-credit-svc", "asset_credit_svc", "ASSET", "asset", 4),
    Service("notify", "notify-svc", "notify_svc", "NOTIFY", "notify", 5),
    Service("analytics", "analytics-svc", "analytics_svc", "ANALYTICS", "analytics", 6),
)
# The operations console (console/, docs/console.md): its own process beside the services; its database
# holds only the staff sessions its replicas share; it calls the services' APIs with the staff member's token.
CONSOLE = Service("console", "console", "console", "CONSOLE", "console", 7, parent="")
# What `start-services` starts, `stop-services` stops and `status` lists.
PROCESSES: tuple[Service, ...] = (*SERVICES, CONSOLE)
# The development staff login user-svc seeds outside production (user_svc/settings.py, DEV_ADMIN_PASSWORD).
DEV_STAFF_LOGIN = ("admin", "dev-admin-password")

# name -> (PB_ENV, service port base, MQTT port, Kafka port, database prefix, start clean on every `up`)
STACK_DEFAULTS: dict[str, tuple[str, int, int, int, str, bool]] = {
    "run": ("development", 8000, 18830, 19092, "pb_", False),
    "test": ("test", 9000, 18831, 19093, "pb_test_", True),
    # `make chaos` (tests/chaos): its own clean stack, so faults never touch `run` or `test`.
    "chaos": ("development", 8500, 18832, 19094, "pb_chaos_", True),
}


@dataclass(frozen=True)
class PgTarget:
    mode: str  # "system": a server we found and do not own; "private": our cluster under .state/pg
    host: str
    port: int
    user: str


@dataclass(frozen=True)
class Stack:
    name: str
    pb_env: str
    port_base: int
    mqtt_port: int
    kafka_port: int
    db_prefix: str
    fresh: bool

    @property
    def dir(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def env_file(self) -> Path:
        return self.dir / "stack.env"

    @property
    def json_file(self) -> Path:
        return self.dir / "stack.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def pids(self) -> Path:
        return self.dir / "pids"

    @property
    def mqtt_dir(self) -> Path:
        return self.dir / "mosquitto"

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def fleet_file(self) -> Path:
        return self.dir / "fleet.json"

    @property
    def emulator_port(self) -> int:
        return self.port_base + 10

    def service_port(self, service: Service) -> int:
        return self.port_base + service.port_offset

    def database(self, service: Service) -> str:
        return f"{self.db_prefix}{service.db_suffix}"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise StackError(f"{name}={raw!r} is not an integer") from exc


def stack_from_env(name: str) -> Stack:
    pb_env, port_base, mqtt_port, kafka_port, db_prefix, fresh = STACK_DEFAULTS[name]
    key = name.upper()
    return Stack(
        name=name,
        pb_env=pb_env,
        port_base=_env_int(f"PB_{key}_PORT_BASE", port_base),
        mqtt_port=_env_int(f"PB_{key}_MQTT_PORT", mqtt_port),
        kafka_port=_env_int(f"PB_{key}_KAFKA_PORT", kafka_port),
        db_prefix=db_prefix,
        fresh=fresh,
    )


def load_stack(name: str) -> Stack:
    """The stack as the last `up` resolved it (ports may have come from the environment then)."""
    meta = read_meta(stack_from_env(name))
    saved = meta.get("stack")
    if isinstance(saved, dict):
        return Stack(**saved)
    return stack_from_env(name)


def read_meta(stack: Stack) -> dict[str, object]:
    if not stack.json_file.exists():
        return {}
    data = json.loads(stack.json_file.read_text())
    return data if isinstance(data, dict) else {}


def write_meta(stack: Stack, **fields: object) -> None:
    meta = read_meta(stack)
    meta.update(fields)
    meta["stack"] = asdict(stack)
    stack.dir.mkdir(parents=True, exist_ok=True)
    stack.json_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise `up`/`stop` of one stack (or of the private cluster) across concurrent invocations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- env file


_SAFE_ENV_CHARS = set(string.ascii_letters + string.digits + "_./:@+=,-%")


def format_env_value(value: str) -> str:
    if value and set(value) <= _SAFE_ENV_CHARS:
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    lines = [f"# Generated by deploy/local/stack.py `up` -- {path.parent.name} stack. Holds secrets: do not commit."]
    lines += [f"{key}={format_env_value(value)}" for key, value in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("'\"'\"'", "'")
        values[key.strip()] = value
    return values


def stack_env(stack: Stack) -> dict[str, str]:
    if not stack.env_file.exists():
        raise StackError(f"{stack.env_file} is missing: run `python3 {rel(STACK_TOOL)} up --stack {stack.name}` first")
    return read_env_file(stack.env_file)


def process_env(stack: Stack, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ + the stack's env file + what a child process needs to find the tooling."""
    env = dict(os.environ)
    env.update(stack_env(stack))
    env["PB_STACK_TOOL"] = str(STACK_TOOL)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
