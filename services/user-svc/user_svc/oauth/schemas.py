import re
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, StrictBool
from pydantic_core import PydanticCustomError

from kit.auth import USER_SCOPES
from user_svc.validators import PlainText

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_PRIVATE_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+$")  # RFC 8252 7.1: reverse domain name


def _redirect_uri(value: str) -> str:
    """https anywhere, http only to the loopback (native apps), or a private-use scheme in reverse
    domain form (`com.example.app:/callback`); absolute, no fragment, no spaces."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise PydanticCustomError("invalid_redirect_uri", "A redirect URI has no spaces or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise PydanticCustomError("invalid_redirect_uri", "Not a valid URI") from None
    scheme = parts.scheme.lower()
    if parts.fragment or "#" in value:
        raise PydanticCustomError("invalid_redirect_uri", "A redirect URI must not have a fragment")
    if scheme == "https" and host:
        return value
    if scheme == "http" and host in _LOOPBACK:
        return value
    if _PRIVATE_SCHEME.match(scheme) and (parts.path or parts.netloc):
        return value
    raise PydanticCustomError(
        "invalid_redirect_uri", "Use https, http to the loopback, or a private-use scheme like com.example.app:/cb"
    )


def _user_scope(value: str) -> str:
    if value not in USER_SCOPES:
        raise PydanticCustomError("unknown_scope", "Unknown scope; known: {known}", {"known": " ".join(USER_SCOPES)})
    return value


RedirectUri = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_redirect_uri)]
UserScopeName = Annotated[str, Field(max_length=40), AfterValidator(_user_scope)]
ClientId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class NewClientIn(BaseModel):
    name: PlainText = Field(min_length=1, max_length=100)
    redirect_uris: list[RedirectUri] = Field(min_length=1, max_length=10)
    scopes: list[UserScopeName] = Field(min_length=1, max_length=len(USER_SCOPES))
    confidential: StrictBool = Field(
        description="a server-side app that keeps a secret; false for a mini program or app"
    )


class ClientOut(BaseModel):
    client_id: str
    name: str
    redirect_uris: list[str]
    scopes: list[str]
    confidential: bool
    created_at: datetime
    disabled: bool


class NewClientOut(ClientOut):
    client_secret: str | None = Field(description="confidential clients only; shown once, keep it secret")


class AuthorizeQuery(BaseModel):
    """An authorization request (RFC 6749 4.1.1 with RFC 7636 PKCE, S256 only)."""

    response_type: Literal["code"]
    client_id: ClientId
    redirect_uri: str = Field(min_length=1, max_length=512, description="exactly one of the registered URIs")
    scope: str = Field(min_length=1, max_length=200, pattern=r"^[a-z]+( [a-z]+)*$", examples=["rentals wallet"])
    state: str | None = Field(default=None, max_length=500, pattern=r"^[\x20-\x7e]*$")
    code_challenge: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$", description="BASE64URL(SHA256(code_verifier))")
    code_challenge_method: Literal["S256"]


class AuthorizeIn(AuthorizeQuery):
    approve: StrictBool = Field(description="the user's explicit decision")


class ScopeOut(BaseModel):
    scope: str
    description: str


class ConsentOut(BaseModel):
    scopes: list[str]
    granted_at: datetime
    updated_at: datetime


class AuthorizationRequestOut(BaseModel):
    client_id: str
    client_name: str
    redirect_uri: str
    requested_scopes: list[ScopeOut]
    state: str | None
    existing_consent: ConsentOut | None
    consent_required: bool = Field(description="the request asks for scopes the user has not granted yet")


class RedirectOut(BaseModel):
    redirect_to: str = Field(description="send the user agent here (the code and state, or error=access_denied)")


class GrantOut(BaseModel):
    client_id: str
    client_name: str
    scopes: list[str]
    granted_at: datetime
    updated_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str | None = Field(default=None, description="absent for client_credentials")
    scope: str
