"""`install`: Debian packages when missing, the virtualenv and the lock, the local packages."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from stacklib.common import (
    BOOTSTRAP_FILE,
    CJK_FONT,
    INSTALL_STAMP,
    LOCK_FILE,
    ROOT,
    VENV,
    VENV_PY,
    StackError,
    rel,
    say,
)
from stacklib.postgres import find_system_postgres, pg_bindir, psql_binary
from stacklib.procs import apt_install, find_binary, run

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


def system_packages_needed() -> list[str]:
    needed: list[str] = []
    if find_binary("mosquitto") is None or find_binary("mosquitto_passwd") is None:
        needed.append("mosquitto")
    if find_binary("mosquitto_pub") is None or find_binary("mosquitto_sub") is None:
        needed.append("mosquitto-clients")
    if pg_bindir() is None and (os.environ.get("PB_PG_MODE", "auto") == "private" or find_system_postgres() is None):
        needed.append("postgresql")
    elif psql_binary() is None:  # a usable server elsewhere, and no client here (the stack talks to it with psql)
        needed.append("postgresql-client")
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
