"""The rules of the MDS 2.0 Provider API this interface follows: version negotiation in `Accept`,
hourly parameters, the media type, de-identified ids, last_updated/ttl on near-real-time answers."""

import hashlib
import hmac
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from kit.errors import BusinessError

MDS_VERSION = "2.0"
MDS_FULL_VERSION = "2.0.0"
MEDIA_TYPE = f"application/vnd.mds+json;version={MDS_VERSION}"
_HOUR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})$")
_NS = uuid.UUID("8d1d5f0e-6a3c-4a57-9d0e-3c1b2f6e7a10")  # device and stop ids (public objects)


class UnsupportedVersion(BusinessError):
    status = 406
    code = "unsupported_version"
    title = f"Send Accept: {MEDIA_TYPE}"


class BadParam(BusinessError):
    status = 400
    code = "bad_param"
    title = "A query parameter is missing or malformed"


class HourNotFound(BusinessError):
    status = 404
    code = "not_found"
    title = "That hour has not begun"


def negotiate(request: Request) -> None:
    """406 unless one of the `Accept` media ranges is application/vnd.mds+json with version=2.0."""
    for media_range in request.headers.get("accept", "").split(","):
        kind, *params = [part.strip() for part in media_range.split(";")]
        values = dict(p.split("=", 1) for p in params if "=" in p)
        if kind.lower() == "application/vnd.mds+json" and values.get("version", "").strip('"') == MDS_VERSION:
            return
    raise UnsupportedVersion(f"This interface speaks MDS {MDS_VERSION} only", error="unsupported_version")


def mds_json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse({"version": MDS_FULL_VERSION, **body}, status_code=status, media_type=MEDIA_TYPE)


def parse_hour(value: str | None, name: str) -> datetime:
    """`YYYY-MM-DDTHH` (a UTC hour) -> its start; 400 when missing or malformed."""
    match = _HOUR.match(value or "")
    if match is None:
        raise BadParam(f"`{name}` is required as YYYY-MM-DDTHH (a UTC hour)", error="bad_param", param=name)
    try:
        year, month, day, hour = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        raise BadParam(f"`{name}` is not a real hour", error="bad_param", param=name) from None


def hour_state(hour: datetime, now: datetime, lag: timedelta) -> str:
    """'future' (404), 'open' (202: not complete, or still within the lag late events may take), 'done'."""
    if hour > now:
        return "future"
    if hour + timedelta(hours=1) + lag > now:
        return "open"
    return "done"


def ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def trip_id(key: bytes, rental_id: uuid.UUID) -> str:
    """A keyed, one-way id: the regulator can join a trip's events, nobody can get the rental id back."""
    digest = hmac.new(key, rental_id.bytes, hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def event_id(key: bytes, rental_id: uuid.UUID, kind: str) -> str:
    digest = hmac.new(key, rental_id.bytes + kind.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def telemetry_id(key: bytes, bank_id: str, at: datetime) -> str:
    digest = hmac.new(key, f"{bank_id}|{at.isoformat()}".encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def device_id(bank_id: str) -> str:
    return str(uuid.uuid5(_NS, f"bank:{bank_id}"))


def stop_id(cabinet_id: str) -> str:
    return str(uuid.uuid5(_NS, f"cabinet:{cabinet_id}"))
