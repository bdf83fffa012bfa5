"""Masking personal data in staff-facing answers (issue 15). Staff see masked phone numbers, e-mail
addresses and names unless their role holds `PII_PERMISSION` and they ask to reveal one record, which
the service audits. One implementation for every service."""

PII_PERMISSION = "users:pii"


def mask_phone(phone: str | None) -> str | None:
    """`+8613800138000` -> `+86138****8000`: the country code and operator prefix, then the last four."""
    if not phone:
        return phone
    if len(phone) <= 7:
        return "*" * len(phone)
    head = 6 if phone.startswith("+") else 3
    return phone[:head] + "*" * (len(phone) - head - 4) + phone[-4:]


def mask_email(email: str | None) -> str | None:
    """`xiaoming@example.com` -> `x***@example.com`."""
    if not email:
        return email
    local, at, domain = email.partition("@")
    if not at:
        return mask_name(email)
    return (local[:1] + "***" if local else "***") + "@" + domain


def mask_name(name: str | None) -> str | None:
    """`小明` -> `小*`, `xiaoming` -> `x*******`: the first character only."""
    if not name:
        return name
    return name[:1] + "*" * max(len(name) - 1, 1)
