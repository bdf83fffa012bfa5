"""Per-device X.509 client certificates (issue 15; docs/protocol.md "Client certificates"): issued from the
device's CSR with the device CA (the device keeps its key; the CSR must name the device id), recorded by
serial, and revoked at credential rotation, revocation and retirement. Each revocation rewrites the device
CA's CRL in the database; the broker-auth sidecar writes it beside the broker's password file and reloads
the broker, so the revoked certificate's next handshake fails."""

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from device_svc.admin.service import DeviceNotFound
from device_svc.certificates import repository
from device_svc.models import DeviceCertificate, DeviceCredential
from kit.errors import BusinessError, Conflict
from kit.x509 import Authority, CsrRefused, build_crl, cert_pem, fingerprint, issue_from_csr

log = logging.getLogger(__name__)


def load_device_ca(cert_file: Any, key_file: Any) -> Authority | None:
    return Authority.load(cert_file, key_file) if cert_file is not None and key_file is not None else None


def device_ca(runtime: Any) -> Authority | None:
    """The device CA device-svc was started with (runtime.extras["device_ca"]), or None."""
    ca = runtime.extras.get("device_ca")
    return ca if isinstance(ca, Authority) else None


class CertificatesNotConfigured(BusinessError):
    status = 503
    code = "certificates_not_configured"
    title = "No device CA is configured (DEVICE_CA_CERT_FILE, DEVICE_CA_KEY_FILE)"


class CsrNotAccepted(BusinessError):
    status = 422
    code = "csr_refused"
    title = "The certificate signing request is refused"


async def issue(
    session: AsyncSession, ca: Authority | None, device_id: str, csr_pem: str
) -> tuple[str, DeviceCertificate]:
    """A certificate for an active device's CSR: (its PEM, its record)."""
    if ca is None:
        raise CertificatesNotConfigured()
    credential = await session.get(DeviceCredential, device_id)
    if credential is None:
        raise DeviceNotFound(f"{device_id} has no credential")
    if not credential.active:
        raise Conflict(f"{device_id}'s credentials are revoked")
    try:
        cert = issue_from_csr(ca, csr_pem.encode(), device_id)
    except CsrRefused as exc:
        raise CsrNotAccepted(str(exc)) from None
    record = DeviceCertificate(
        serial=format(cert.serial_number, "x"),
        device_id=device_id,
        fingerprint=fingerprint(cert),
        issued_at=datetime.now(UTC),
        not_after=cert.not_valid_after_utc,
    )
    await repository.add(session, record)
    log.info("device certificate issued", extra={"device_id": device_id, "serial": record.serial})
    return cert_pem(cert).decode(), record


async def revoke_all(session: AsyncSession, ca: Authority | None, device_id: str) -> list[str]:
    """Revoke the device's certificates and rewrite the CRL; the serials revoked (none: nothing changes)."""
    if ca is None:
        return []
    now = datetime.now(UTC)
    serials = await repository.revoke_device(session, device_id, now)
    if serials:
        revoked = await repository.revoked(session, now)
        pem = build_crl(ca, [(int(serial, 16), at) for serial, at in revoked]).decode()
        await repository.save_crl(session, pem, now)
        log.info("device certificates revoked", extra={"device_id": device_id, "serials": serials})
    return serials
