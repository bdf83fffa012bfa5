"""Mosquitto's password file: its PBKDF2-SHA512 entry format (what `mosquitto_passwd` writes:
`user:$7$<iterations>$<base64 salt>$<base64 hash>`, 12-byte salt, 64-byte SHA-512 hash), an atomic
rewrite, and SIGHUP to make a running broker reload it without a restart."""

import base64
import hashlib
import hmac
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

PBKDF2_ID = "7"
ITERATIONS = 101  # what mosquitto_passwd 2.0 uses
SALT_BYTES = 12
HASH_BYTES = 64


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The part after `user:` of a password-file line."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"${PBKDF2_ID}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, entry: str) -> bool:
    parts = entry.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != PBKDF2_ID:
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)


def render_password_file(entries: Mapping[str, str]) -> str:
    """`entries`: username -> hash entry. Usernames may not hold `:` or line breaks."""
    lines = []
    for user in sorted(entries):
        if not user or any(c in user for c in ":\r\n") or any(c in entries[user] for c in "\r\n"):
            raise ValueError(f"unusable password-file user {user!r}")
        lines.append(f"{user}:{entries[user]}\n")
    return "".join(lines)


def write_atomically(path: Path, content: str, *, mode: int = 0o600) -> None:
    """Write to a temporary file next to `path`, fsync, then rename over it: a reader (the
    broker on SIGHUP) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_password_file(path: Path, entries: Mapping[str, str]) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_atomically(path, render_password_file(entries), mode=mode)


def reload_broker(pidfile: Path | None) -> bool:
    """SIGHUP the broker whose pid is in `pidfile`; False when there is none to signal."""
    if pidfile is None:
        return False
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        log.warning("no broker pid to signal", extra={"pidfile": str(pidfile), "error": repr(exc)})
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("broker pid is not running", extra={"pidfile": str(pidfile), "pid": pid})
        return False
    return True
