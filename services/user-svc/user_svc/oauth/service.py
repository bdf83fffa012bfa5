"""Client applications acting for users: OAuth 2.0 authorization code grant (RFC 6749) with PKCE
(RFC 7636, S256 only), as a JSON API. Administrators register applications (exact redirect URIs,
allowed scopes, confidential with a hashed secret or public); a signed-in user reviews a request and
consents (recorded: user, application, scopes, time); the one-time code, bound to the application,
redirect URI, challenge, user and scopes, is exchanged for a delegated access token (`sub` the user,
`client_id` the application, `scope` the granted scopes) and a rotating refresh token. A code
presented twice revokes the tokens issued from it; withdrawing consent ends the application's tokens."""

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit
from uuid import UUID, uuid4

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kit.auth import USER_SCOPES, Principal
from user_svc.admins import audit
from user_svc.clients import service as api_keys
from user_svc.errors import (
    InvalidRefreshToken,
    OAuthClientNotFound,
    OAuthGrantNotFound,
    OAuthInvalidClient,
    OAuthInvalidRedirectUri,
    OAuthInvalidScope,
    TokenError,
    TokenInvalidClient,
    TokenInvalidGrant,
    TokenInvalidScope,
    TokenUnsupportedGrantType,
    UserNotFound,
)
from user_svc.events import EventPublisher
from user_svc.models import OAuthClient, OAuthCode, OAuthConsent, UserStatus
from user_svc.oauth import repository
from user_svc.oauth.schemas import AuthorizeQuery
from user_svc.security import IssuedToken, Tokens
from user_svc.sessions import service as sessions
from user_svc.sessions.service import IssuedSession
from user_svc.settings import Settings
from user_svc.users import repository as users

log = logging.getLogger(__name__)

CLIENT_PREFIX = "pbc_"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 4.1
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 20


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _ordered(scopes: set[str]) -> list[str]:
    return [s for s in USER_SCOPES if s in scopes]


# ---- administration ------------------------------------------------------------------------------


async def register_client(
    session: AsyncSession,
    actor: Principal,
    *,
    name: str,
    redirect_uris: list[str],
    scopes: list[str],
    confidential: bool,
    events: EventPublisher,
) -> tuple[OAuthClient, str | None]:
    secret = secrets.token_urlsafe(32) if confidential else None
    client = OAuthClient(
        id=f"{CLIENT_PREFIX}{uuid4().hex}",
        name=name,
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        scopes=_ordered(set(scopes)),
        confidential=confidential,
        secret_hash=_hash(secret) if secret is not None else None,
        created_by=UUID(actor.subject),
    )
    session.add(client)
    await session.flush()
    await session.refresh(client)
    await audit.record_change(
        session,
        events,
        actor,
        "oauth_client.create",
        target_type="oauth_client",
        target_id=client.id,
        before={},
        after={
            "name": name,
            "redirect_uris": client.redirect_uris,
            "scopes": client.scopes,
            "confidential": confidential,
        },
    )
    return client, secret


async def list_clients(session: AsyncSession) -> list[OAuthClient]:
    return await repository.list_clients(session)


async def disable_client(
    session: AsyncSession, actor: Principal, client_id: str, *, settings: Settings, events: EventPublisher
) -> None:
    """The application can no longer authenticate; every token it holds for any user ends now."""
    client = await repository.get_client(session, client_id, for_update=True)
    if client is None or client.disabled_at is not None:
        raise OAuthClientNotFound()
    client.disabled_at = datetime.now(UTC)
    await sessions.end_client(session, client.id, settings, events)
    await audit.record_change(
        session,
        events,
        actor,
        "oauth_client.disable",
        target_type="oauth_client",
        target_id=client.id,
        before={"disabled_at": None},
        after={"disabled_at": client.disabled_at.isoformat()},
    )


# ---- the authorization request (the signed-in user) ----------------------------------------------


@dataclass(frozen=True)
class AuthorizationRequest:
    client: OAuthClient
    redirect_uri: str
    scopes: list[str]
    state: str | None
    code_challenge: str
    consent: OAuthConsent | None  # the user's active consent to this application, if any

    @property
    def consent_required(self) -> bool:
        return self.consent is None or not set(self.scopes) <= set(self.consent.scopes)


async def check_request(session: AsyncSession, user_id: UUID, query: AuthorizeQuery) -> AuthorizationRequest:
    client = await repository.get_client(session, query.client_id)
    if client is None or client.disabled_at is not None:
        raise OAuthInvalidClient()
    if query.redirect_uri not in client.redirect_uris:  # exact match, no prefixes or patterns
        raise OAuthInvalidRedirectUri()
    requested = set(query.scope.split())
    refused = sorted(s for s in requested if s not in USER_SCOPES or s not in client.scopes)
    if refused:
        raise OAuthInvalidScope(refused=refused, allowed=client.scopes)
    consent = await repository.get_consent(session, user_id, client.id)
    if consent is not None and consent.revoked_at is not None:
        consent = None
    return AuthorizationRequest(
        client, query.redirect_uri, _ordered(requested), query.state, query.code_challenge, consent
    )


async def decide(
    session: AsyncSession, user_id: UUID, query: AuthorizeQuery, *, approve: bool, settings: Settings
) -> str:
    """The user's decision: where to send the user agent next (with a code, or `error=access_denied`)."""
    request = await check_request(session, user_id, query)
    if not approve:
        log.info("authorization denied by the user", extra={"user_id": str(user_id), "client_id": request.client.id})
        return _with_params(request.redirect_uri, error="access_denied", state=request.state)
    user = await users.get_by_id(session, user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise UserNotFound()
    now = datetime.now(UTC)
    consent = await _consent_for_update(session, user_id, request.client.id, now)
    if consent.revoked_at is not None or not consent.scopes:
        consent.scopes, consent.granted_at, consent.revoked_at = request.scopes, now, None
    else:
        consent.scopes = _ordered(set(consent.scopes) | set(request.scopes))
    consent.updated_at = now
    code = secrets.token_urlsafe(32)
    session.add(
        OAuthCode(
            code_hash=_hash(code),
            client_id=request.client.id,
            user_id=user_id,
            redirect_uri=request.redirect_uri,
            scopes=request.scopes,
            code_challenge=request.code_challenge,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.oauth_code_ttl_s),
        )
    )
    await session.flush()
    log.info(
        "authorization granted",
        extra={"user_id": str(user_id), "client_id": request.client.id, "scopes": request.scopes},
    )
    return _with_params(request.redirect_uri, code=code, state=request.state)


async def _consent_for_update(session: AsyncSession, user_id: UUID, client_id: str, now: datetime) -> OAuthConsent:
    await session.execute(
        insert(OAuthConsent)
        .values(user_id=user_id, client_id=client_id, scopes=[], granted_at=now, updated_at=now, revoked_at=None)
        .on_conflict_do_nothing(index_elements=[OAuthConsent.user_id, OAuthConsent.client_id])
    )
    consent = await repository.get_consent(session, user_id, client_id, for_update=True)
    assert consent is not None
    await session.refresh(consent)
    return consent


def _with_params(uri: str, **params: str | None) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---- the user's authorised applications ----------------------------------------------------------


async def grants(session: AsyncSession, user_id: UUID) -> list[tuple[OAuthConsent, OAuthClient]]:
    return await repository.active_grants(session, user_id)


async def revoke_grant(
    session: AsyncSession, user_id: UUID, client_id: str, *, settings: Settings, events: EventPublisher
) -> None:
    """Withdraw consent: the application's tokens for this user stop working in every service at once,
    and codes not yet exchanged are refused."""
    consent = await repository.get_consent(session, user_id, client_id, for_update=True)
    if consent is None or consent.revoked_at is not None:
        raise OAuthGrantNotFound()
    consent.revoked_at = datetime.now(UTC)
    await sessions.end_grant(session, user_id, client_id, settings, events)
    log.info("authorization revoked by the user", extra={"user_id": str(user_id), "client_id": client_id})


# ---- the token endpoint (the client application) -------------------------------------------------


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """RFC 6749 3.2: form-encoded, each parameter at most once."""
    if content_type.split(";")[0].strip().lower() != _FORM:
        raise TokenError(f"Send the token request as {_FORM}")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise TokenError("The form is not valid UTF-8 form encoding") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise TokenError(f"The parameter {name!r} is repeated")
        if any(ord(ch) < 0x20 for ch in value):
            raise TokenError(f"The parameter {name!r} holds control characters")
        form[name] = value
    return form


def _presented_credentials(form: dict[str, str], authorization: str | None) -> tuple[str, str | None]:
    """(client_id, secret or None) from HTTP Basic (client_secret_basic) or the form."""
    basic: tuple[str, str] | None = None
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise TokenInvalidClient("Malformed HTTP Basic credentials") from None
            name, sep, password = decoded.partition(":")
            if not sep:
                raise TokenInvalidClient("Malformed HTTP Basic credentials")
            basic = (unquote_plus(name), unquote_plus(password))
    if basic is not None and "client_secret" in form:
        raise TokenError("Authenticate the client one way only")
    if basic is not None and form.get("client_id", basic[0]) != basic[0]:
        raise TokenError("client_id differs from the authenticated client")
    client_id = basic[0] if basic is not None else form.get("client_id", "")
    secret = basic[1] if basic is not None else form.get("client_secret")
    return client_id, secret


async def authenticate_client(session: AsyncSession, form: dict[str, str], authorization: str | None) -> OAuthClient:
    """HTTP Basic (client_secret_basic) or client_id/client_secret in the form for a confidential
    client; client_id alone for a public one (which must then prove itself with PKCE)."""
    client_id, secret = _presented_credentials(form, authorization)
    if not _CLIENT_ID.match(client_id):
        raise TokenInvalidClient()
    client = await repository.get_client(session, client_id)
    if client is None or client.disabled_at is not None:
        raise TokenInvalidClient()
    if client.confidential:
        if secret is None or client.secret_hash is None or not hmac.compare_digest(client.secret_hash, _hash(secret)):
            raise TokenInvalidClient()
    elif secret:
        raise TokenInvalidClient("A public client has no secret")
    return client


def _pkce_matches(verifier: str, challenge: str) -> bool:
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


async def exchange_code(
    session: AsyncSession,
    client: OAuthClient,
    form: dict[str, str],
    *,
    tokens: Tokens,
    settings: Settings,
    events: EventPublisher,
) -> IssuedSession:
    """grant_type=authorization_code. Raises TokenError subclasses; a reused code's tokens are revoked
    in `session` before it raises, so the caller answers (and commits) rather than rolling back."""
    code, redirect_uri, verifier = form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
    if not code or not redirect_uri or not verifier:
        raise TokenError("code, redirect_uri and code_verifier are required")
    if not _VERIFIER.match(verifier):
        raise TokenError("code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~")
    now = datetime.now(UTC)
    row = await repository.get_code(session, _hash(code))
    if row is None or row.client_id != client.id:
        raise TokenInvalidGrant()
    if row.used_at is not None:
        if row.family_id is not None:
            await sessions.end_family(session, row.family_id, settings, events, reason="authorization_code_reused")
        log.warning("authorization code reused; its tokens revoked", extra={"client_id": client.id})
        raise TokenInvalidGrant("The authorization code was already used; the tokens issued from it are revoked")
    if row.expires_at <= now:
        raise TokenInvalidGrant("The authorization code has expired")
    if row.redirect_uri != redirect_uri:
        raise TokenInvalidGrant("redirect_uri differs from the authorization request's")
    if not _pkce_matches(verifier, row.code_challenge):
        raise TokenInvalidGrant("The code_verifier does not match the code_challenge")
    consent = await repository.get_consent(session, row.user_id, client.id)
    # granted_at is reset by a consent given anew after a withdrawal: older codes stay dead
    if (
        consent is None
        or consent.revoked_at is not None
        or consent.granted_at > row.created_at
        or not set(row.scopes) <= set(consent.scopes)
    ):
        raise TokenInvalidGrant("The user withdrew the consent")
    user = await users.get_by_id(session, row.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        raise TokenInvalidGrant()
    row.used_at = now
    issued = await sessions.start(
        session, user_id=row.user_id, tokens=tokens, settings=settings, client_id=client.id, scopes=row.scopes
    )
    row.family_id = issued.family_id
    return issued


async def refresh(
    session: AsyncSession,
    client: OAuthClient,
    form: dict[str, str],
    *,
    tokens: Tokens,
    settings: Settings,
    events: EventPublisher,
) -> IssuedSession:
    """grant_type=refresh_token: rotates like a user's own; a spent token revokes its family."""
    token = form.get("refresh_token")
    if not token:
        raise TokenError("refresh_token is required")
    if len(token) > 512:
        raise TokenInvalidGrant()
    narrow = form.get("scope")
    try:
        issued = await sessions.rotate(
            session,
            refresh_token=token,
            tokens=tokens,
            settings=settings,
            events=events,
            client_id=client.id,
            narrow_scopes=narrow.split() if narrow is not None else None,
        )
    except InvalidRefreshToken:
        raise TokenInvalidGrant() from None
    if issued is None:
        raise TokenInvalidGrant("The refresh token was already used; every token of its family is revoked")
    return issued


async def grant_client_credentials(
    session: AsyncSession, form: dict[str, str], authorization: str | None, *, tokens: Tokens
) -> tuple[IssuedToken, list[str]]:
    """grant_type=client_credentials (RFC 6749 4.4) for an API key (the supervision platform, a
    partner): a short-lived client token, no refresh token."""
    client_id, secret = _presented_credentials(form, authorization)
    if not secret:
        raise TokenInvalidClient()
    requested = form.get("scope", "").split() or None
    try:
        issued = await api_keys.client_credentials(session, client_id, secret, requested, tokens)
    except ValueError:
        raise TokenInvalidScope() from None
    if issued is None:
        raise TokenInvalidClient()
    return issued


async def grant_tokens(
    session: AsyncSession,
    form: dict[str, str],
    authorization: str | None,
    *,
    tokens: Tokens,
    settings: Settings,
    events: EventPublisher,
) -> IssuedSession:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise TokenError("grant_type is required")
    client = await authenticate_client(session, form, authorization)
    if grant_type == "authorization_code":
        return await exchange_code(session, client, form, tokens=tokens, settings=settings, events=events)
    if grant_type == "refresh_token":
        return await refresh(session, client, form, tokens=tokens, settings=settings, events=events)
    raise TokenUnsupportedGrantType()
