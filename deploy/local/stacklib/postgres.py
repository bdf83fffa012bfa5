"""PostgreSQL: a system server when usable, else a private cluster under .state/pg; databases per stack."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from stacklib.common import (
    PROCESSES,
    ROOT,
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


def psql_binary() -> str | None:
    """The cluster's own psql when the server binaries are installed, else the client package's."""
    bindir = pg_bindir()
    if bindir is not None and (bindir / "psql").is_file():
        return str(bindir / "psql")
    return shutil.which("psql")


def psql(host: str, port: int, user: str, sql: str, *, timeout: float = 5.0) -> list[list[str]]:
    """One statement through psql (never asking for a password): its rows, tab-separated fields."""
    binary = psql_binary()
    if binary is None:
        raise PgError("psql is not installed (`make install` installs postgresql-client)")
    cmd = [binary, "-X", "-q", "-A", "-t", "-F", "\t", "-w", "-v", "ON_ERROR_STOP=1"]
    cmd += ["-h", host, "-p", str(port), "-U", user, "-d", "postgres", "-c", sql]
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(max(int(timeout), 1))}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=timeout + 5, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PgError(f"psql did not answer within {timeout + 5:.0f}s") from exc
    if done.returncode != 0:
        raise PgError(done.stderr.strip() or f"psql exited with {done.returncode}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def pg_usable(host: str, port: int, user: str) -> bool:
    """Reachable without a password, and allowed to create databases."""
    try:
        rows = psql(host, port, user, "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
    except (OSError, PgError):
        return False
    return bool(rows) and rows[0][0] == "t"


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
    def sql(statement: str) -> list[list[str]]:
        return psql(target.host, target.port, target.user, statement)

    existing = {row[0] for row in sql("SELECT datname FROM pg_database")}
    with_database = [s for s in PROCESSES if s.db_suffix]
    for service in with_database:
        name = stack.database(service)
        if stack.fresh and name in existing:
            sql(f'DROP DATABASE "{name}" WITH (FORCE)')
            existing.discard(name)
        if name not in existing:
            sql(f'CREATE DATABASE "{name}"')
    verb = "recreated" if stack.fresh else "ready"
    say(f"databases {verb}: {', '.join(stack.database(s) for s in with_database)}", stack.name)


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


def restart_private_pg() -> None:
    """Restart the private cluster (`make chaos`). The server writes to its log: with its output on our pipe
    (no -l), it would hold the pipe open and this call would never return."""
    log = private_pg_datadir().parent / "postgres.log"
    pg_ctl(["-l", str(log), "-o", f"-p {private_pg_port()}", "-m", "fast", "-w", "-t", "60", "restart"], capture=True)
