"""Device client certificates for administrators (permission `devices:provision`, audited)."""

from typing import Annotated

from fastapi import APIRouter, Depends

from device_svc.certificates import repository, service
from device_svc.certificates.schemas import (
    CertificateList,
    CertificateOut,
    CertificateRequest,
    CertificatesRevoked,
    IssuedCertificate,
)
from device_svc.registry.endpoints import DeviceIdPath
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import SessionDep
from kit.x509 import cert_pem

Admin = Annotated[Principal, Depends(require_permission("devices:provision"))]

router = APIRouter(prefix="/v1/admin/devices", tags=["device certificates"])


@router.post(
    "/{device_id}/certificates",
    status_code=201,
    response_model=IssuedCertificate,
    dependencies=[audited("device.issue_certificate", "device", "device_id")],
)
async def issue(
    device_id: DeviceIdPath,
    body: CertificateRequest,
    _: Admin,
    session: SessionDep,
    runtime: RuntimeDep,
    audit: CurrentAudit,
) -> IssuedCertificate:
    """A client certificate for the device's CSR (the device keeps its key): the broker's certificate listener
    takes its CN, the device id, as the user name. 422 csr_refused (malformed, not self-signed, another CN, a
    weak key), 409 when the device's credentials are revoked, 503 certificates_not_configured."""
    ca = service.device_ca(runtime)
    pem, record = await service.issue(session, ca, device_id, body.csr)
    audit.created(device_id, {"serial": record.serial, "fingerprint": record.fingerprint})
    assert ca is not None
    return IssuedCertificate(
        device_id=device_id,
        serial=record.serial,
        certificate=pem,
        ca_certificate=cert_pem(ca.cert).decode(),
        not_after=record.not_after,
    )


@router.get("/{device_id}/certificates", response_model=CertificateList)
async def certificates(device_id: DeviceIdPath, _: Admin, session: SessionDep) -> CertificateList:
    rows = await repository.of_device(session, device_id)
    return CertificateList(
        device_id=device_id, items=[CertificateOut.model_validate(r, from_attributes=True) for r in rows]
    )


@router.post(
    "/{device_id}/certificates/revoke",
    response_model=CertificatesRevoked,
    dependencies=[audited("device.revoke_certificates", "device", "device_id")],
)
async def revoke(
    device_id: DeviceIdPath, _: Admin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> CertificatesRevoked:
    """Every valid certificate of the device into the CRL (rotation, revocation and retirement do it too)."""
    serials = await service.revoke_all(session, service.device_ca(runtime), device_id)
    audit.note(before={"valid": serials}, after={"revoked": serials})
    return CertificatesRevoked(device_id=device_id, revoked=serials)
