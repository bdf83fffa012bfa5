from datetime import datetime

from pydantic import BaseModel, Field


class CertificateRequest(BaseModel):
    csr: str = Field(min_length=64, max_length=8192, description="PEM certificate signing request; CN = device id")


class IssuedCertificate(BaseModel):
    device_id: str
    serial: str
    certificate: str = Field(description="PEM, signed by the device CA; the broker takes its CN as the user name")
    ca_certificate: str = Field(description="The device CA (PEM)")
    not_after: datetime


class CertificateOut(BaseModel):
    serial: str
    fingerprint: str
    issued_at: datetime
    not_after: datetime
    revoked_at: datetime | None


class CertificateList(BaseModel):
    device_id: str
    items: list[CertificateOut]


class CertificatesRevoked(BaseModel):
    device_id: str
    revoked: list[str]
