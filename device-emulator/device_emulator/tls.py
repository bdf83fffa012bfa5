"""TLS for the emulated devices: they verify the broker against the platform's CA (MQTT_CA_FILE in the stack
environment, `ca_file` in the fleet file) and may present a client certificate instead of a password."""

from __future__ import annotations

import os
import ssl
from pathlib import Path


def client_context(
    ca_file: str | Path, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> ssl.SSLContext:
    """Verifies the broker's chain and host name, TLS 1.2 or later; presents `cert_file` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    return context


def context_from_env(ca_file: str | Path | None = None) -> ssl.SSLContext | None:
    """A context for `ca_file`, else for $MQTT_CA_FILE; None (clear text) when neither is set."""
    chosen = ca_file or os.environ.get("MQTT_CA_FILE")
    return client_context(chosen) if chosen else None
