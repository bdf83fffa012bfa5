#!/usr/bin/env python3
"""Local stacks of the power-bank platform: PostgreSQL, Mosquitto, a Kafka-protocol broker and the services.

Two named stacks live side by side so `make test` can run while `make run` is up:

    run   ports 8001-8006, MQTT 18830, Kafka 19092, databases pb_<x>,      state in .state/run/
    test  ports 9001-9006, MQTT 18831, Kafka 19093, databases pb_test_<x>, state in .state/test/

Standard library only: it must run before the virtualenv exists (`install`). Work that needs the
virtualenv's packages (aiokafka, cryptography) is delegated to deploy/local/venv_tasks.py. This file is the
command line (up, migrate, services, stop, status, ...); its parts live in deploy/local/stacklib/ (common: paths,
the services and stacks, env files; procs; postgres; install; mosquitto; kafka).

    python3 deploy/local/stack.py install
    python3 deploy/local/stack.py up [--stack run|test]
    python3 deploy/local/stack.py migrate | start-services | seed | emulator | stop-services | stop | status | env
    python3 deploy/local/stack.py exec --stack test -- pytest tests
    python3 deploy/local/stack.py clean

Environment knobs: PB_STACK_BACKEND=auto|local|containers (stacklib/backend.py: containers through testcontainers
where a Docker engine answers; default auto for the test stack, local for the run stack),
PB_<STACK>_CONTAINER_PG_PORT, PB_PG_MODE=auto|system|private, PB_PG_HOST, PB_PG_PORT (system server, 5432),
PB_PRIVATE_PG_PORT (55432), PB_<STACK>_PORT_BASE, PB_<STACK>_MQTT_PORT, PB_<STACK>_KAFKA_PORT,
PB_READY_TIMEOUT (seconds, 60), PB_TANSU_BIN.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stacklib.backend import choose_backend, engine_address, requested_backend
from stacklib.common import (
    CONSOLE,
    DEV_STAFF_LOGIN,
    KAFKA_PARTITIONS,
    MQTT_SERVICE_USER,
    PROCESSES,
    ROOT,
    SERVICES,
    STACK_DEFAULTS,
    STATE_ROOT,
    VENV,
    VENV_PY,
    VENV_TASKS,
    PgTarget,
    Service,
    Stack,
    StackError,
    _env_int,
    file_lock,
    load_stack,
    process_env,
    read_env_file,
    read_meta,
    rel,
    say,
    stack_from_env,
    tail,
    write_env_file,
    write_meta,
)
from stacklib.containers import broker_reload_command, start_containers, stop_containers
from stacklib.install import cmd_install
from stacklib.kafka import ensure_tansu
from stacklib.mosquitto import ensure_mosquitto, load_secrets, mosquitto_paths, mosquitto_tls, mqtt_connack
from stacklib.postgres import PRIVATE_PG, database_url, ensure_databases, pg_usable, resolve_postgres, stop_private_pg
from stacklib.procs import pid_alive, port_open, read_pid, require_venv, run, spawn, stop_pidfile, venv_has_module

# --------------------------------------------------------------------------- up


def ensure_keys(stack: Stack, name: str = "jwt") -> tuple[Path, Path]:
    """An Ed25519 keypair: `jwt` (tokens) or `firmware` (device-svc signs firmware images, cabinets verify)."""
    private, public = stack.keys_dir / f"{name}-ed25519.pem", stack.keys_dir / f"{name}-ed25519.pub.pem"
    if not (private.exists() and public.exists()):
        stack.keys_dir.mkdir(parents=True, exist_ok=True)
        run([str(VENV_PY), str(VENV_TASKS), "gen-keys", "--private", str(private), "--public", str(public)])
        say(f"generated the Ed25519 {name} keypair in {rel(stack.keys_dir)}", stack.name)
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
        # tansu keeps its topics in memory: after a restart each service creates the missing ones with the
        # setup's partitions (kit.broker_loss), never the broker's default (4).
        "KAFKA_TOPIC_PARTITIONS": str(KAFKA_PARTITIONS),
        # A new consumer group member is assigned after about half the session timeout: keep it short locally.
        # Every heartbeat is a request to the broker from each group member (ten in the mesh): once a second
        # at rest costs about 0.7 % of a core less than twice (measured), and 3 s survives a loaded machine.
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        # tansu never answers a waiting fetch early (it re-reads its storage at half the remaining wait), so
        # the wait is the latency of a hop and its re-reads the broker's CPU: a short wait while records flow,
        # at rest 500 ms for the borrow/return path (a hop waits at most 250 ms) and 5 s for the others
        # (the first event after a quiet spell waits at most 2.5 s; then they flow). Measured at rest
        # (issue 9): background consumers at 2 s instead of 5 s cost tansu about 0.5 % of a core more; the
        # four critical ones at 500 ms cost it about 1.2 %. See ServiceSettings.kafka_fetch_flow_wait_ms;
        # Apache Kafka needs none of this.
        "KAFKA_FETCH_FLOW_WAIT_MS": "50",
        "KAFKA_BACKGROUND_FETCH_FLOW_WAIT_MS": "200",
        "KAFKA_FETCH_MAX_WAIT_MS": "500",
        "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS": "5000",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(stack.mqtt_port),
        # The broker listens with TLS only; clients verify its certificate against the stack's private CA.
        "MQTT_CA_FILE": str(mosquitto_tls(stack).ca_cert),
        "DEVICE_CA_CERT_FILE": str(mosquitto_tls(stack).device_ca_cert),
        "DEVICE_CA_KEY_FILE": str(mosquitto_tls(stack).device_ca_key),
        "MQTT_USERNAME": MQTT_SERVICE_USER,
        "MQTT_PASSWORD": password,
        "MQTT_ACL_FILE": str(mqtt["acl"]),
        "JWT_PRIVATE_KEY_FILE": str(keys[0]),
        "JWT_PUBLIC_KEY_FILE": str(keys[1]),
        "EMULATOR_CONTROL_URL": f"http://127.0.0.1:{stack.emulator_port}",
        # Request rate limits x100 (kit.ratelimit): tests, the fuzz run and the benchmark send far more from one
        # address or user than a person would; the limiter's own tests set their limits themselves.
        "RATE_LIMIT_SCALE": "100",
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
    # Partner webhooks go to public addresses only; on this machine a partner's receiver is on loopback.
    env["WEBHOOK_ALLOW_LOOPBACK"] = "true"
    # Every e2e user registers from 127.0.0.1: the per-address SMS-code limit (30 an hour) would refuse a
    # suite run twice within the hour (and `make chaos` registers its users). Only on the test and chaos stacks;
    # user-svc's own tests set their limits.
    if stack.name in ("test", "chaos"):
        env["CODE_MAX_PER_CLIENT"] = "1000"
        # The console refreshes a staff token with less than this left: near the token's 900 s lifetime,
        # every console test runs through silent refreshes (about one per session every 5 s).
        env["CONSOLE_REFRESH_AHEAD_S"] = "895"
        # analytics-svc pseudonymises a deregistered user's facts an hour after (their last rental's facts
        # have arrived by then); the e2e erasure test waits for it.
        env["ERASURE_DELAY_S"] = "2"
        env["ERASURE_INTERVAL_S"] = "1"
    if stack.name == "chaos":  # a payment provider that answers late (up to 8 s), while faults hit its notifications
        env["SANDBOX_PAY_DELAY_MAX_S"] = "8"
        # The sandbox outlives asset-credit's kill -9 as a real provider would: it keeps its orders on disk.
        env["SANDBOX_STATE_DIR"] = str(stack.dir / "sandbox-provider")
    for service in PROCESSES:  # the six services, and the console (its staff sessions)
        if service.db_suffix:
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
            # The payment sandbox's orders belong to the databases about to be dropped.
            shutil.rmtree(stack.dir / "sandbox-provider", ignore_errors=True)
        choice = choose_backend(
            requested_backend(stack),
            engine_address(),
            testcontainers_installed=lambda: venv_has_module("testcontainers"),
        )
        say(f"backend: {choice.name} ({choice.reason})", stack.name)
        password = load_secrets(stack)["mqtt_device_svc_password"]
        target = start_containers(stack, password) if choice.name == "containers" else resolve_postgres(stack)
        write_meta(stack, pg=asdict(target), active=True, backend=asdict(choice))
        ensure_databases(stack, target)
        if choice.name == "local":
            ensure_mosquitto(stack, password)
            ensure_tansu(stack)
        keys = ensure_keys(stack)
        firmware_private, firmware_public = ensure_keys(stack, "firmware")
        env = build_env(stack, target, password, keys)
        env |= {"FIRMWARE_SIGNING_KEY_FILE": str(firmware_private), "FIRMWARE_PUBLIC_KEY_FILE": str(firmware_public)}
        write_env_file(stack.env_file, env)
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


# device-svc runs several instances on one MQTT shared subscription (docs/protocol.md "Several device-svc
# instances"): the run stack shows that shape (PB_DEVICE_SVC_INSTANCES, default 2); the test stack keeps one (its
# suites start their own second instance where they test several).
DEVICE_INSTANCES_DEFAULT = {"run": 2, "chaos": 2}


@dataclass(frozen=True)
class Instance:
    """One process of a service: the first keeps the service's port and files, the others get their own."""

    service: Service
    index: int  # 1-based

    @property
    def label(self) -> str:
        return self.service.directory if self.index == 1 else f"{self.service.directory}-{self.index}"

    def files(self, stack: Stack) -> tuple[Path, Path]:
        return stack.pids / f"{self.label}.pid", stack.logs / f"{self.label}.log"

    def port(self, stack: Stack) -> int:
        return stack.service_port(self.service) if self.index == 1 else stack.port_base + 20 + self.index

    def env(self, count: int) -> dict[str, str]:
        if count == 1:
            return {}
        # Clean sessions: with persistent ones Mosquitto keeps handing a stopped member its share of the device
        # messages (queued until it comes back; services/device-svc/tests/test_instances.py).
        return {"MQTT_SHARED_GROUP": self.service.directory, "MQTT_CLIENT_ID": self.label, "MQTT_CLEAN_SESSION": "true"}


def instance_count(stack: Stack, service: Service) -> int:
    if service.package != "device_svc":
        return 1
    count = _env_int("PB_DEVICE_SVC_INSTANCES", DEVICE_INSTANCES_DEFAULT.get(stack.name, 1))
    if not 1 <= count <= 9:
        raise StackError(f"PB_DEVICE_SVC_INSTANCES={count}: between 1 and 9")
    return count


def instances(stack: Stack, service: Service, *, running: bool = False) -> list[Instance]:
    """The service's instances: as configured, or (`running`) every one with a pid file, for stop and status."""
    if running:
        found = [Instance(service, 1)]
        extra = stack.pids.glob(f"{service.directory}-[0-9].pid") if service.package == "device_svc" else []
        found += [Instance(service, n) for n in sorted(int(p.stem.rsplit("-", 1)[1]) for p in extra)]
        return found
    return [Instance(service, n) for n in range(1, instance_count(stack, service) + 1)]


def readyz(port: int, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


# The broker's auth sidecar (device_svc.brokerauth, docs/protocol.md "Device accounts"): it keeps Mosquitto's
# password file equal to device-svc's registry, so device-svc itself never touches the broker. It comes and goes
# with device-svc here; in production it runs beside each broker (deploy/k8s/32-mqtt-broker.yaml).
BROKER_AUTH_MODULE = "device_svc.brokerauth"


def backend_of(stack: Stack) -> str:
    """The backend the last `up` chose (stacklib.backend): local or containers."""
    backend = read_meta(stack).get("backend")
    return str(backend.get("name", "local")) if isinstance(backend, dict) else "local"


def broker_auth_files(stack: Stack) -> tuple[Path, Path]:
    return stack.pids / "broker-auth.pid", stack.logs / "broker-auth.log"


def ensure_broker_auth(stack: Stack, base_env: dict[str, str]) -> None:
    """One sync now (the broker knows every registered device before a service answers), then the sidecar."""
    pid_file, log = broker_auth_files(stack)
    if pid_alive(read_pid(pid_file), BROKER_AUTH_MODULE):
        return
    mqtt = mosquitto_paths(stack)
    env = {
        **base_env,
        "DATABASE_URL": base_env["DEVICE_DATABASE_URL"],
        "BROKER_ID": f"{stack.name}-mosquitto",
        # only the sidecar writes the broker's password file (a second writer could put back an older fleet)
        "MQTT_PASSWORD_FILE": str(mqtt["passwd"]),
    }
    if backend_of(stack) == "containers":  # the broker's pid is the container's, not one of this machine's
        env["MQTT_BROKER_RELOAD_COMMAND"] = broker_reload_command(stack)
    else:
        env["MQTT_BROKER_PIDFILE"] = str(mqtt["pid"])
    run([str(VENV_PY), "-m", BROKER_AUTH_MODULE, "--once"], env=env, cwd=ROOT)
    proc = spawn([str(VENV_PY), "-m", BROKER_AUTH_MODULE], log=log, pid_file=pid_file, env=env, cwd=ROOT)
    say(f"broker-auth sidecar running (pid {proc.pid}, log {rel(log)})", stack.name)


def stop_services(stack: Stack, services: Sequence[Service] = PROCESSES) -> None:
    stop_pidfile(stack.pids / "emulator.pid", "device_emulator", "device emulator", stack.name)
    for service in services:
        for instance in instances(stack, service, running=True):
            stop_pidfile(instance.files(stack)[0], service.package, instance.label, stack.name)
        if service.package == "device_svc":
            stop_pidfile(broker_auth_files(stack)[0], BROKER_AUTH_MODULE, "broker-auth sidecar", stack.name)


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
    if any(service.package == "device_svc" for service in present):
        ensure_broker_auth(stack, base_env)

    started: dict[Instance, subprocess.Popen[bytes]] = {}
    for service in present:
        wanted = instances(stack, service)
        for instance in instances(stack, service, running=True)[len(wanted) :]:  # fewer than last time
            stop_pidfile(instance.files(stack)[0], service.package, instance.label, stack.name)
        for instance in wanted:
            pid_file, log = instance.files(stack)
            port = instance.port(stack)
            if args.keep and pid_alive(read_pid(pid_file), service.package) and readyz(port) == 200:
                say(f"{instance.label} already ready on :{port}", stack.name)
                continue
            stop_pidfile(pid_file, service.package, instance.label, stack.name)
            if port_open(port):
                raise StackError(f"port {port} for {instance.label} is taken by another process")
            env = {**base_env, "SERVICE_PORT": str(port), **instance.env(len(wanted))}
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
            started[instance] = spawn(cmd, log=log, pid_file=pid_file, env=env, cwd=service.path)

    deadline = time.monotonic() + timeout
    pending = dict(started)
    last_code: dict[Instance, int | None] = {}
    started_services = list(dict.fromkeys(instance.service for instance in started))
    while pending:
        for instance, proc in list(pending.items()):
            _, log = instance.files(stack)
            if proc.poll() is not None:
                stop_services(stack, started_services)
                raise StackError(f"{instance.label} exited with code {proc.returncode}; log {rel(log)}:\n{tail(log)}")
            url = f"http://127.0.0.1:{instance.port(stack)}"
            last_code[instance] = readyz(instance.port(stack), timeout=1.0)
            if last_code[instance] == 200:
                say(f"{instance.label} ready on {url} (pid {proc.pid})", stack.name)
                del pending[instance]
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{i.label} (last answer: {last_code.get(i) or 'none'})" for i in pending)
            logs = "\n".join(f"  {rel(i.files(stack)[1])}:\n{tail(i.files(stack)[1])}" for i in pending)
            stop_services(stack, started_services)
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
        if backend_of(stack) == "containers":
            stop_containers(stack)
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
        for instance in instances(stack, service, running=True):
            pid = read_pid(instance.files(stack)[0])
            port = instance.port(stack)
            if not pid_alive(pid, service.package):
                print(f"  {instance.label:<18} -     http://127.0.0.1:{port} (not running)")
                continue
            code = readyz(port)
            line(instance.label, code == 200, f"http://127.0.0.1:{port}  /readyz {code}  pid {pid}")
    auth_pid = read_pid(broker_auth_files(stack)[0])
    if pid_alive(auth_pid, BROKER_AUTH_MODULE):
        print(f"  {'broker-auth':<18} up    sidecar of mosquitto, pid {auth_pid}")
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
