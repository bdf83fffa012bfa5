"""PostgreSQL: a system server when usable, else a private cluster under .state/pg; databases per stack."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import pwd
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from stacklib.common import (
    ROOT,
    SERVICES,
    STATE_ROOT,
    PgTarget,
    Stack,
    StackError,
    _env_int,
    file_lock,
    rel,
    say,
    tail,
    warn,
)
from stacklib.procs import apt_install, port_open, run

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


def pg_bindir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None
