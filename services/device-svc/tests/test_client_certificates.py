"""Per-device X.509 client certificates on the real broker (issue 15; docs/protocol.md "Client
certificates"): a listener that requires a certificate signed by the platform's device CA and takes the
certificate's common name as the user name (`use_identity_as_username`), so the stacks' ACL (`%u`) binds a
device to its own topics exactly as with passwords. Certificates come from `kit.x509.issue_from_csr` (the
device keeps its key; the CSR names its id). Revocation is a CRL the broker reloads on SIGHUP: a revoked
certificate's next handshake fails; a connection made before keeps going (measured here), which is why a
revocation must also end the device's session."""

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from device_svc.brokerauth.sync import BrokerAuthSidecar, BrokerPaths
from kit.db import make_engine
from kit.x509 import (
    Authority,
    BrokerFiles,
    build_crl,
    cert_pem,
    client_context,
    ensure_authority,
    ensure_broker_files,
    issue_from_csr,
    key_pem,
    make_csr,
    new_authority,
    new_key,
    write_private,
)

pytestmark = pytest.mark.integration


def device_ca_files(directory: Path) -> tuple[Path, Path]:
    """The session device-svc's device CA (conftest.make_settings names the same files)."""
    cert, key = directory / "device-ca.crt", directory / "device-ca.key"
    ensure_authority(cert, key, "pb device CA (test)")
    return cert, key


def admin(signer: Any) -> dict[str, str]:
    token = signer.issue("00000000-0000-0000-0000-0000000000ad", kind="admin", roles=["super_admin"])
    return {"Authorization": f"Bearer {token}"}


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ACL = (Path(__file__).resolve().parents[3] / "deploy" / "local" / "mosquitto" / "acl").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class CertBroker:
    port: int
    directory: Path
    tls: BrokerFiles
    device_ca: Authority
    crl: Path
    process: subprocess.Popen[bytes]

    def device(self, device_id: str, ca: Authority | None = None) -> tuple[Path, Path, int]:
        """A device's key (kept by the device) and the certificate issued from its CSR; its serial."""
        key = new_key()
        cert = issue_from_csr(ca or self.device_ca, make_csr(key, device_id), device_id)
        cert_file, key_file = self.directory / f"{device_id}.crt", self.directory / f"{device_id}.key"
        cert_file.write_bytes(cert_pem(cert))
        write_private(key_file, key_pem(key))
        return cert_file, key_file, cert.serial_number

    def client(self, device_id: str, cert: tuple[Path, Path] | None) -> aiomqtt.Client:
        context = client_context(self.tls.ca_cert, *cert) if cert else client_context(self.tls.ca_cert)
        return aiomqtt.Client("127.0.0.1", self.port, tls_context=context, identifier=f"{device_id}-c", timeout=5)

    def revoke(self, *serials: int) -> None:
        from datetime import UTC, datetime

        write_private(self.crl, build_crl(self.device_ca, [(s, datetime.now(UTC)) for s in serials]))
        os.kill(self.process.pid, signal.SIGHUP)


@pytest.fixture
def cert_broker(tmp_path: Path, broker: Any) -> Iterator[CertBroker]:
    """Mosquitto with the certificate listener (the production shape in docs/protocol.md): the broker's
    own certificate from the stack CA, devices' certificates from the device CA the session's device-svc
    issues with (a CA of its own), its CRL."""
    tls = ensure_broker_files(tmp_path / "tls", ["127.0.0.1"])
    ca_cert, ca_key = device_ca_files(broker.directory)
    device_ca = Authority.load(ca_cert, ca_key)
    (tmp_path / "device-ca.crt").write_bytes(cert_pem(device_ca.cert))
    crl = tmp_path / "device-crl.pem"
    write_private(crl, build_crl(device_ca, []))
    (tmp_path / "acl").write_text(ACL)
    (tmp_path / "passwd").write_text("")  # no device has a password here
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nper_listener_settings false\nallow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
        f"listener {port} 127.0.0.1\ncafile {tmp_path / 'device-ca.crt'}\n"
        f"certfile {tls.server_cert}\nkeyfile {tls.server_key}\ntls_version tlsv1.2\n"
        f"require_certificate true\nuse_identity_as_username true\ncrlfile {crl}\n"
        f"log_dest file {tmp_path / 'mosquitto.log'}\nlog_type all\n"
    )
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    (tmp_path / "mosquitto.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while not listening(port):
        assert process.poll() is None and time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.05)
    yield CertBroker(port, tmp_path, tls, device_ca, crl, process)
    process.terminate()
    process.wait(10)


async def refused(client: aiomqtt.Client) -> bool:
    try:
        async with client:
            return False
    except aiomqtt.MqttError:
        return True


async def test_a_certificate_is_the_device_identity_and_its_topics_stay_its_own(cert_broker: CertBroker) -> None:
    one = cert_broker.device("CAB-0001")
    two = cert_broker.device("CAB-0002")
    async with cert_broker.client("watcher", two[:2]) as watcher:
        await watcher.subscribe("pb/v1/devices/CAB-0002/cmd/#", qos=1)
        async with cert_broker.client("CAB-0001", one[:2]) as device:
            await device.subscribe("pb/v1/devices/CAB-0001/cmd/#", qos=1)
            await device.publish("pb/v1/devices/CAB-0001/up/heartbeat", b"{}", qos=1)
            # Another device's command topic: the ACL (user name = the certificate's CN) refuses it silently.
            await device.publish("pb/v1/devices/CAB-0002/cmd/eject", b"{}", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in watcher.messages:
                    raise AssertionError(f"CAB-0001 reached another device's topic: {message.topic}")
    log = (cert_broker.directory / "mosquitto.log").read_text()
    assert "u'CAB-0001'" in log  # the broker took the certificate's common name as the user name
    assert "Denied PUBLISH from CAB-0001-c" in log


async def test_no_certificate_a_foreign_ca_and_a_revoked_one_are_refused(cert_broker: CertBroker) -> None:
    assert await refused(cert_broker.client("CAB-0003", None))
    foreign = cert_broker.device("CAB-0003", ca=new_authority("someone else's CA"))
    assert await refused(cert_broker.client("CAB-0003", foreign[:2]))
    good = cert_broker.device("CAB-0004")
    assert not await refused(cert_broker.client("CAB-0004", good[:2]))

    revoked = cert_broker.device("CAB-0005")
    connected = cert_broker.client("CAB-0005", revoked[:2])
    async with connected:
        cert_broker.revoke(revoked[2])

        async def handshake_refused() -> bool:
            return await refused(cert_broker.client("CAB-0005", revoked[:2]))

        deadline = time.monotonic() + 10
        while not await handshake_refused():
            assert time.monotonic() < deadline, "the broker never applied the CRL"
            await asyncio.sleep(0.1)
        # The connection made before the revocation is not cut by the reload: it still publishes.
        await connected.publish("pb/v1/devices/CAB-0005/up/heartbeat", b"{}", qos=1)
    assert not await refused(cert_broker.client("CAB-0004", good[:2]))  # the others are unaffected


async def test_device_svc_issues_a_certificate_and_a_rotation_revokes_it(
    service: Any, cert_broker: CertBroker, signer: Any, database_url: str
) -> None:
    """Issued from the device's CSR through the admin API; the credential rotation revokes it; the
    broker-auth sidecar writes the new CRL beside the broker's password file and reloads the broker."""
    key = new_key()
    body = {"csr": make_csr(key, "CAB-0001").decode()}
    issued = await service.post("/v1/admin/devices/CAB-0001/certificates", json=body, headers=admin(signer))
    assert issued.status_code == 201, issued.text
    cert_file, key_file = cert_broker.directory / "issued.crt", cert_broker.directory / "issued.key"
    cert_file.write_text(issued.json()["certificate"])
    write_private(key_file, key_pem(key))
    assert issued.json()["ca_certificate"] == cert_pem(cert_broker.device_ca.cert).decode()
    async with cert_broker.client("CAB-0001", (cert_file, key_file)) as device:
        await device.publish("pb/v1/devices/CAB-0001/up/heartbeat", b"{}", qos=1)
    other = await service.post("/v1/admin/devices/CAB-0002/certificates", json=body, headers=admin(signer))
    assert (other.status_code, other.json()["code"]) == (422, "csr_refused")  # the CSR names CAB-0001

    rotated = await service.post("/v1/admin/devices/CAB-0001/credentials/rotate", headers=admin(signer))
    assert rotated.status_code == 200, rotated.text
    listed = (await service.get("/v1/admin/devices/CAB-0001/certificates", headers=admin(signer))).json()["items"]
    assert [(c["serial"], c["revoked_at"] is not None) for c in listed][-1] == (issued.json()["serial"], True)

    engine = make_engine(database_url)
    sidecar = BrokerAuthSidecar(
        engine,
        database_url,
        BrokerPaths(
            cert_broker.directory / "passwd", cert_broker.directory / "mosquitto.pid", crl_file=cert_broker.crl
        ),
        broker_id=f"cert-broker-{uuid.uuid4().hex[:6]}",
        service_user="device-svc",
        service_password="unused-here",
    )
    try:
        assert await sidecar.sync_once() >= 0
    finally:
        await engine.dispose()
    deadline = time.monotonic() + 10
    while not await refused(cert_broker.client("CAB-0001", (cert_file, key_file))):
        assert time.monotonic() < deadline, "the revoked certificate still gets in"
        await asyncio.sleep(0.1)
