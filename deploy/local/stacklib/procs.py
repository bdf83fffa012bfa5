"""Processes: finding binaries, spawning, pid files, open-file limits, terminating, waiting for ports."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from stacklib.common import SBIN_DIRS, VENV, VENV_PY, VENV_TASKS, StackError, rel, say, tail

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


def require_venv() -> None:
    if not VENV_PY.exists():
        raise StackError(f"{rel(VENV)} does not exist: run `make install` first")


def venv_has_module(module: str) -> bool:
    require_venv()
    return run([str(VENV_PY), str(VENV_TASKS), "has-module", module], check=False, capture=True).returncode == 0
