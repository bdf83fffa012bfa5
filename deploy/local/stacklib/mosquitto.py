"""Mosquitto: the stack's TLS-only broker with per-device credentials, and its readiness probe."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import string
import time
from pathlib import Path

from mqtt_tls import TlsFiles, ensure_tls_files, listener_conf, tls_files

from stacklib.common import HERE, MQTT_SERVICE_USER, VENV_PY, VENV_TASKS, Stack, StackError, say, tail
from stacklib.procs import (
    find_binary,
    open_files_limit,
    pid_alive,
    port_open,
    process_open_files,
    read_pid,
    run,
    spawn,
    terminate,
    wait_for_port,
)

# --------------------------------------------------------------------------- Mosquitto


def mqtt_connack(port: int, username: str | None, password: str | None, ca_file: Path, host: str = "127.0.0.1") -> int:
    """Connect with mosquitto_sub over TLS (the broker's certificate verified against `ca_file`) and leave once
    subscribed; returns the CONNACK code (0 accepted, 4 bad credentials, 5 not authorised)."""
    binary = find_binary("mosquitto_sub")
    if binary is None:
        raise StackError("mosquitto_sub is missing (`make install` installs mosquitto-clients)")
    cmd = [binary, "-h", host, "-p", str(port), "--cafile", str(ca_file)]
    cmd += ["-i", f"pb-stack-probe-{secrets.token_hex(4)}", "-t", "pb/stack-probe", "-E", "-W", "5"]
    if username is not None:
        cmd += ["-u", username] + (["-P", password] if password is not None else [])
    done = run(cmd, check=False, capture=True)
    if done.returncode == 0:
        return 0
    if "Connection Refused" in done.stderr:
        return done.returncode  # mosquitto_sub exits with the CONNACK code
    raise OSError(f"mosquitto_sub: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}")


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


def render_conf(stack: Stack, *, in_container: bool = False) -> str:
    """The broker's configuration. In a container (stacklib.containers) it listens on every interface of the
    container (the port is published on the host) and keeps its pid file inside the container: the host must
    never read a container's pid as one of its own."""
    paths = mosquitto_paths(stack)
    listeners = listener_conf(stack.mqtt_port, mosquitto_tls(stack))
    if in_container:
        listeners = listeners.replace(f"listener {stack.mqtt_port} 127.0.0.1", f"listener {stack.mqtt_port}")
    # As root, Mosquitto 2 drops to user `mosquitto`, which could neither read our 0600 files nor the password file
    # device-svc (running as us) rewrites later. `user root` keeps it as the invoking user; ignored when not root.
    user_line = "user root" if in_container or os.geteuid() == 0 else "# not root: runs as the invoking user"
    return string.Template((HERE / "mosquitto" / "mosquitto.conf.template").read_text()).substitute(
        stack=stack.name,
        listeners=listeners,
        password_file=paths["passwd"],
        acl_file=paths["acl"],
        pid_file="/mosquitto/data/mosquitto.pid" if in_container else paths["pid"],
        user_line=user_line,
        persistence_dir=f"{stack.mqtt_dir}/",
    )


def prepare_broker_files(stack: Stack, password: str, conf: str) -> None:
    """ACL, TLS files, the configuration and the password file (with device-svc's account)."""
    mosquitto_passwd = find_binary("mosquitto_passwd")
    if mosquitto_passwd is None:
        raise StackError("mosquitto is not installed: run `make install`")
    paths = mosquitto_paths(stack)
    stack.mqtt_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "mosquitto" / "acl", paths["acl"])
    ensure_tls_files(VENV_PY, VENV_TASKS, mosquitto_tls(stack))
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


def ensure_mosquitto(stack: Stack, password: str) -> None:
    mosquitto = find_binary("mosquitto")
    if mosquitto is None:
        raise StackError("mosquitto is not installed: run `make install`")
    paths = mosquitto_paths(stack)
    conf = render_conf(stack)
    started = paths["started_conf"].read_text() if paths["started_conf"].exists() else None
    conf_changed = started != conf
    prepare_broker_files(stack, password, conf)

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
