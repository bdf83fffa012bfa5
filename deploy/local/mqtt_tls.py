"""TLS for the local stacks' Mosquitto: a private CA and a broker certificate generated at `up` and kept
under `.state/<stack>/mosquitto/tls/`, the broker's TLS listener, and the TLS probe `stack.py` checks the
broker with. The certificate work runs in the virtualenv (kit.x509 needs `cryptography`); this module is
standard library only, like stack.py that imports it.

Every listener of a local stack is TLS: devices, device-svc, the emulator and the bench swarm verify the
broker against `ca.crt` (the path is MQTT_CA_FILE in stack.env)."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The names a client may dial the local broker by (checked against the certificate's subject alt names).
BROKER_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def device_ca_cert(self) -> Path:
        return self.directory / "device-ca.crt"

    @property
    def device_ca_key(self) -> Path:
        return self.directory / "device-ca.key"


def tls_files(mqtt_dir: Path) -> TlsFiles:
    return TlsFiles(mqtt_dir / "tls")


def ensure_tls_files(venv_py: Path, venv_tasks: Path, files: TlsFiles) -> None:
    """Create the CA (once), the broker certificate (again when it nears its end) and an empty CRL."""
    cmd = [str(venv_py), str(venv_tasks), "gen-tls", "--dir", str(files.directory)]
    for host in BROKER_HOSTS:
        cmd += ["--host", host]
    subprocess.run(cmd, check=True)
    files.directory.chmod(0o700)


def listener_conf(port: int, files: TlsFiles) -> str:
    """The TLS listener for devices (user name and password) and device-svc."""
    return (
        f"listener {port} 127.0.0.1\n"
        f"cafile {files.ca_cert}\n"
        f"certfile {files.server_cert}\n"
        f"keyfile {files.server_key}\n"
        "tls_version tlsv1.2\n"
    )


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
