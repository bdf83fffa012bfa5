"""The opaque keyset cursor every list endpoint hands out: a moment and an id, base64url-encoded.
Decoding refuses anything this module did not write, including moments a database cannot compare
(a year-1 or year-9999 date whose offset pushes it outside the calendar in UTC)."""

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

from kit.errors import BusinessError


class InvalidCursor(BusinessError):
    status = 400
    code = "invalid_cursor"
    title = "The cursor is not valid"


def encode_cursor(moment: datetime, ident: UUID) -> str:
    raw = f"{moment.astimezone(UTC).isoformat()}|{ident}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, detail: str | None = None) -> tuple[datetime, UUID]:
    """`(moment in UTC, id)`, or InvalidCursor (400) for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment.astimezone(UTC), UUID(ident)
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor(detail) from None
