"""Client applications acting for users: OAuth 2.0 authorization code with PKCE (S256), consent,
rotating refresh tokens, scope limits and revocation, against the real PostgreSQL and Kafka."""

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import jwt
import pytest
from sqlalchemy import make_url

from kit.auth import TokenVerifier

from .support import admin_token, assert_problem, bearer

pytestmark = pytest.mark.integration

PHONE = "+8613700137000"
PASSWORD = "correct horse battery"
REDIRECT = "https://partner.example.com/oauth/callback"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def token_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """RFC 6749 5.2: `error` (and `error_description`), no caching; here also a problem's `code`."""
    body = assert_problem(response, status, error)
    assert body["error"] == error and body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    return body


async def signed_in_user(client: httpx.AsyncClient, phone: str = PHONE) -> dict[str, Any]:
    admin = await admin_token(client)
    assert (await client.post("/v1/sms-codes", json={"phone": phone, "purpose": "register"})).status_code == 202
    outbox = await client.get("/v1/dev/messages", params={"destination": phone, "limit": 1}, headers=bearer(admin))
    terms = (await client.get("/v1/terms")).json()["version"]
    registered = await client.post(
        "/v1/users",
        json={
            "phone": phone,
            "sms_code": outbox.json()[0]["code"],
            "password": PASSWORD,
            "terms_version": terms,
            "terms_accepted": True,
        },
    )
    assert registered.status_code == 201, registered.text
    session = await client.post("/v1/sessions", json={"login": phone, "password": PASSWORD})
    assert session.status_code == 200, session.text
    body: dict[str, Any] = session.json()
    return body


async def new_client(
    client: httpx.AsyncClient, *, confidential: bool = True, scopes: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/admin/oauth-clients",
        json={
            "name": "Partner mini program",
            "redirect_uris": [REDIRECT, "com.example.partner:/cb"],
            "scopes": scopes or ["profile", "rentals"],
            "confidential": confidential,
        },
        headers=bearer(await admin_token(client)),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def request_params(app: dict[str, Any], challenge: str, **overrides: Any) -> dict[str, Any]:
    params = {
        "response_type": "code",
        "client_id": app["client_id"],
        "redirect_uri": REDIRECT,
        "scope": "profile rentals",
        "state": "xyz-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def authorize(
    client: httpx.AsyncClient, user_token: str, app: dict[str, Any], challenge: str, **overrides: Any
) -> dict[str, list[str]]:
    """The user approves; the query of the redirect (code, state)."""
    body = {**request_params(app, challenge, **overrides), "approve": True}
    response = await client.post("/v1/oauth/authorize", json=body, headers=bearer(user_token))
    assert response.status_code == 200, response.text
    target = urlsplit(response.json()["redirect_to"])
    redirect = body["redirect_uri"]
    assert f"{target.scheme}:{'//' + target.netloc if target.netloc else ''}{target.path}" == redirect
    return parse_qs(target.query)


async def exchange(
    client: httpx.AsyncClient, app: dict[str, Any], code: str, verifier: str, *, redirect_uri: str = REDIRECT
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    if app.get("client_secret"):
        return await client.post("/v1/oauth/token", data=form, headers=basic(app["client_id"], app["client_secret"]))
    return await client.post("/v1/oauth/token", data={**form, "client_id": app["client_id"]})


async def refresh(client: httpx.AsyncClient, app: dict[str, Any], refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app["client_id"]}
    if app.get("client_secret"):
        form["client_secret"] = app["client_secret"]
    return await client.post("/v1/oauth/token", data=form)


async def delegated(
    client: httpx.AsyncClient, user_token: str, app: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    verifier, challenge = pkce()
    query = await authorize(client, user_token, app, challenge, **overrides)
    response = await exchange(client, app, query["code"][0], verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def sql(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows
    finally:
        await conn.close()


async def test_authorization_code_flow(client, keypair, settings, database_url):
    user = await signed_in_user(client)
    app = await new_client(client)
    assert app["client_id"].startswith("pbc_") and app["client_secret"] and app["confidential"]
    verifier, challenge = pkce()

    review = await client.get(
        "/v1/oauth/authorize", params=request_params(app, challenge), headers=bearer(user["access_token"])
    )
    assert review.status_code == 200, review.text
    shown = review.json()
    assert shown["client_name"] == "Partner mini program"
    assert [s["scope"] for s in shown["requested_scopes"]] == ["profile", "rentals"]
    assert all(s["description"] for s in shown["requested_scopes"])
    assert shown["existing_consent"] is None and shown["consent_required"] is True

    query = await authorize(client, user["access_token"], app, challenge)
    assert query["state"] == ["xyz-123"]
    code = query["code"][0]

    # the consent is recorded and shown next time; asking for less needs no new consent
    again = await client.get(
        "/v1/oauth/authorize",
        params=request_params(app, challenge, scope="rentals"),
        headers=bearer(user["access_token"]),
    )
    assert again.json()["consent_required"] is False
    assert again.json()["existing_consent"]["scopes"] == ["profile", "rentals"]
    rows = await sql(database_url, "SELECT user_id, client_id, scopes, granted_at FROM oauth_consents")
    assert [(str(r["user_id"]), r["client_id"]) for r in rows] == [(user["user_id"], app["client_id"])]
    assert rows[0]["granted_at"] is not None
    stored = await sql(database_url, "SELECT code_hash FROM oauth_codes")
    assert stored and all(code not in r["code_hash"] for r in stored)  # codes are kept hashed

    response = await exchange(client, app, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300 and tokens["scope"] == "profile rentals"
    principal = TokenVerifier.from_file(keypair[1], settings.jwt_issuer, settings.jwt_audience).verify(
        tokens["access_token"]
    )
    assert principal.subject == user["user_id"] and principal.kind == "user"
    assert principal.client_id == app["client_id"] and principal.scopes == {"profile", "rentals"}
    assert principal.roles == frozenset()

    me = await client.get("/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["user_id"] == user["user_id"]

    grants = (await client.get("/v1/users/me/authorizations", headers=bearer(user["access_token"]))).json()
    assert [(g["client_id"], g["client_name"], g["scopes"]) for g in grants] == [
        (app["client_id"], "Partner mini program", ["profile", "rentals"])
    ]

    # a public client (a mini program) authenticates with PKCE alone, and may use a private-use redirect
    public = await new_client(client, confidential=False)
    assert public["client_secret"] is None
    verifier, challenge = pkce()
    query = await authorize(client, user["access_token"], public, challenge, redirect_uri="com.example.partner:/cb")
    response = await exchange(client, public, query["code"][0], verifier, redirect_uri="com.example.partner:/cb")
    assert response.status_code == 200, response.text


async def test_pkce_mismatch_and_client_binding(client):
    user = await signed_in_user(client)
    app = await new_client(client, confidential=False)
    other = await new_client(client, confidential=False)
    verifier, challenge = pkce()
    code = (await authorize(client, user["access_token"], app, challenge))["code"][0]

    token_error(await exchange(client, app, code, pkce()[0]), 400, "invalid_grant")
    token_error(await exchange(client, other, code, verifier), 400, "invalid_grant")  # bound to the client
    token_error(await exchange(client, app, code, "short"), 400, "invalid_request")
    # a public client has no secret to present
    with_secret = await client.post(
        "/v1/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier},
        headers=basic(app["client_id"], "made-up"),
    )
    token_error(with_secret, 401, "invalid_client")
    assert (await exchange(client, app, code, verifier)).status_code == 200

    # S256 only, and a challenge is required
    for overrides in ({"code_challenge_method": "plain"}, {"code_challenge_method": None}, {"code_challenge": None}):
        body = {**request_params(app, challenge, **overrides), "approve": True}
        assert_problem(
            await client.post("/v1/oauth/authorize", json=body, headers=bearer(user["access_token"])),
            422,
            "validation_error",
        )


async def test_redirect_uri_must_match_exactly(client):
    user = await signed_in_user(client)
    app = await new_client(client)
    verifier, challenge = pkce()
    for wrong in (REDIRECT + "/more", REDIRECT + "?x=1", "https://evil.example.com/oauth/callback", REDIRECT.upper()):
        params = request_params(app, challenge, redirect_uri=wrong)
        assert_problem(
            await client.get("/v1/oauth/authorize", params=params, headers=bearer(user["access_token"])),
            400,
            "invalid_redirect_uri",
        )
        body = {**params, "approve": True}
        assert_problem(
            await client.post("/v1/oauth/authorize", json=body, headers=bearer(user["access_token"])),
            400,
            "invalid_redirect_uri",
        )
    unknown = request_params({"client_id": "pbc_nobody"}, challenge)
    assert_problem(
        await client.get("/v1/oauth/authorize", params=unknown, headers=bearer(user["access_token"])),
        400,
        "invalid_client",
    )

    # the code is bound to the redirect URI of its request
    code = (await authorize(client, user["access_token"], app, challenge))["code"][0]
    token_error(
        await exchange(client, app, code, verifier, redirect_uri="com.example.partner:/cb"), 400, "invalid_grant"
    )
    assert (await exchange(client, app, code, verifier)).status_code == 200


async def test_a_reused_code_is_refused_and_revokes_its_tokens(client, database_url):
    user = await signed_in_user(client)
    app = await new_client(client)
    verifier, challenge = pkce()
    code = (await authorize(client, user["access_token"], app, challenge))["code"][0]
    first = await exchange(client, app, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert (await client.get("/v1/users/me", headers=bearer(tokens["access_token"]))).status_code == 200

    body = token_error(await exchange(client, app, code, verifier), 400, "invalid_grant")
    assert "already used" in body["error_description"]
    assert_problem(await client.get("/v1/users/me", headers=bearer(tokens["access_token"])), 401, "token_revoked")
    token_error(await refresh(client, app, tokens["refresh_token"]), 400, "invalid_grant")
    rows = await sql(
        database_url,
        "SELECT payload FROM outbox WHERE event_type = 'user.session.revoked' AND key = $1",
        user["user_id"],
    )
    assert any(b"authorization_code_reused" in bytes(r["payload"]) for r in rows)


async def test_refresh_rotates_and_reuse_revokes_the_family(client):
    user = await signed_in_user(client)
    app = await new_client(client)
    tokens = await delegated(client, user["access_token"], app)

    rotated = await refresh(client, app, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != tokens["refresh_token"] and second["scope"] == "profile rentals"
    assert (await client.get("/v1/users/me", headers=bearer(second["access_token"]))).status_code == 200

    # the scope can be narrowed on refresh, never widened
    token_error(
        await client.post(
            "/v1/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"], "scope": "wallet"},
            headers=basic(app["client_id"], app["client_secret"]),
        ),
        400,
        "invalid_scope",
    )

    # the spent token again: the whole family ends
    token_error(await refresh(client, app, tokens["refresh_token"]), 400, "invalid_grant")
    token_error(await refresh(client, app, second["refresh_token"]), 400, "invalid_grant")
    assert_problem(await client.get("/v1/users/me", headers=bearer(second["access_token"])), 401, "token_revoked")

    # refresh tokens do not cross: not to another application, not to or from the user's own sessions
    third = await delegated(client, user["access_token"], app)
    other = await new_client(client)
    token_error(await refresh(client, other, third["refresh_token"]), 400, "invalid_grant")
    assert_problem(
        await client.post("/v1/sessions/refresh", json={"refresh_token": third["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    token_error(await refresh(client, app, user["refresh_token"]), 400, "invalid_grant")
    assert (await refresh(client, app, third["refresh_token"])).status_code == 200


async def test_revoking_consent_ends_the_applications_tokens(client, database_url):
    user = await signed_in_user(client)
    app = await new_client(client)
    tokens = await delegated(client, user["access_token"], app)
    verifier, challenge = pkce()
    pending = (await authorize(client, user["access_token"], app, challenge))["code"][0]

    revoked = await client.delete(
        f"/v1/users/me/authorizations/{app['client_id']}", headers=bearer(user["access_token"])
    )
    assert revoked.status_code == 204, revoked.text
    assert_problem(await client.get("/v1/users/me", headers=bearer(tokens["access_token"])), 401, "token_revoked")
    token_error(await refresh(client, app, tokens["refresh_token"]), 400, "invalid_grant")
    token_error(await exchange(client, app, pending, verifier), 400, "invalid_grant")  # codes not yet exchanged
    assert (await client.get("/v1/users/me/authorizations", headers=bearer(user["access_token"]))).json() == []
    assert_problem(
        await client.delete(f"/v1/users/me/authorizations/{app['client_id']}", headers=bearer(user["access_token"])),
        404,
        "oauth_grant_not_found",
    )
    # the user's own session is untouched
    assert (await client.get("/v1/users/me", headers=bearer(user["access_token"]))).status_code == 200
    rows = await sql(
        database_url,
        "SELECT payload FROM outbox WHERE event_type = 'user.session.revoked' AND key = $1",
        user["user_id"],
    )
    token_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    assert any(token_id.encode() in bytes(r["payload"]) and b"consent_revoked" in bytes(r["payload"]) for r in rows)

    # asking again needs a new consent, and works
    review = await client.get(
        "/v1/oauth/authorize", params=request_params(app, challenge), headers=bearer(user["access_token"])
    )
    assert review.json()["existing_consent"] is None and review.json()["consent_required"] is True
    await delegated(client, user["access_token"], app)
    # a code from before the withdrawal stays dead after a new consent
    token_error(await exchange(client, app, pending, verifier), 400, "invalid_grant")


async def test_denied_consent_redirects_with_access_denied(client, database_url):
    user = await signed_in_user(client)
    app = await new_client(client)
    _, challenge = pkce()
    body = {**request_params(app, challenge), "approve": False}
    response = await client.post("/v1/oauth/authorize", json=body, headers=bearer(user["access_token"]))
    assert response.status_code == 200
    query = parse_qs(urlsplit(response.json()["redirect_to"]).query)
    assert query == {"error": ["access_denied"], "state": ["xyz-123"]}
    assert await sql(database_url, "SELECT 1 FROM oauth_consents") == []
    assert_problem(
        await client.post("/v1/oauth/authorize", json={**body, "approve": "yes"}, headers=bearer(user["access_token"])),
        422,
        "validation_error",
    )


async def test_scope_limits(client):
    user = await signed_in_user(client)
    rentals_only = await new_client(client, scopes=["rentals"])
    _, challenge = pkce()
    for scope in ("profile", "rentals wallet", "admin"):
        body = {**request_params(rentals_only, challenge, scope=scope), "approve": True}
        response = await client.post("/v1/oauth/authorize", json=body, headers=bearer(user["access_token"]))
        assert response.status_code in (400, 422), response.text
        assert response.json()["code"] in ("invalid_scope", "validation_error")
    tokens = await delegated(client, user["access_token"], rentals_only, scope="rentals")
    access = bearer(tokens["access_token"])

    assert_problem(await client.get("/v1/users/me", headers=access), 403, "insufficient_scope")
    # what only the user may do, no application may do
    for method, path, body in (
        ("POST", "/v1/users/me/password", {"current_password": PASSWORD, "new_password": "another password 1"}),
        ("POST", "/v1/users/me/deregistration", {"password": PASSWORD}),
        ("POST", "/v1/sessions/logout", {}),
        ("GET", "/v1/users/me/authorizations", None),
        ("DELETE", f"/v1/users/me/authorizations/{rentals_only['client_id']}", None),
        ("POST", "/v1/oauth/authorize", {**request_params(rentals_only, challenge, scope="rentals"), "approve": True}),
    ):
        response = await client.request(method, path, json=body, headers=access)
        assert_problem(response, 403, "insufficient_scope")
    # the user's own token still does everything
    assert (await client.get("/v1/users/me", headers=bearer(user["access_token"]))).status_code == 200


async def test_admin_routes_refuse_delegated_tokens(client):
    user = await signed_in_user(client)
    app = await new_client(client, scopes=["profile", "rentals", "wallet", "messages", "map"])
    tokens = await delegated(client, user["access_token"], app, scope="profile rentals wallet messages map")
    access = bearer(tokens["access_token"])
    for path in (
        "/v1/admin/users",
        "/v1/admin/oauth-clients",
        "/v1/admin/audit-log",
        "/v1/admin/api-keys",
        "/v1/dev/messages?destination=x",
    ):
        assert (await client.get(path, headers=access)).status_code == 403, path

    # managing applications takes clients:manage
    root = await admin_token(client)
    created = await client.post(
        "/v1/admin/admins",
        json={"login": "support-9", "password": "support passphrase", "role": "support", "must_change_password": False},
        headers=bearer(root),
    )
    assert created.status_code == 201, created.text
    support = (
        await client.post("/v1/admin/sessions", json={"login": "support-9", "password": "support passphrase"})
    ).json()
    assert_problem(
        await client.get("/v1/admin/oauth-clients", headers=bearer(support["access_token"])), 403, "forbidden"
    )
    assert_problem(await client.get("/v1/admin/oauth-clients", headers=bearer(user["access_token"])), 403, "forbidden")


async def test_client_registration_is_validated_and_audited(client, database_url):
    root = bearer(await admin_token(client))
    good = {"name": "App", "redirect_uris": [REDIRECT], "scopes": ["rentals"], "confidential": True}
    for bad in (
        {"redirect_uris": ["http://partner.example.com/cb"]},  # http only to the loopback
        {"redirect_uris": [REDIRECT + "#frag"]},
        {"redirect_uris": ["javascript:alert(1)"]},
        {"redirect_uris": ["/relative"]},
        {"redirect_uris": []},
        {"scopes": ["users:read"]},  # administrative permissions are no user scopes
        {"scopes": []},
        {"confidential": "yes"},
    ):
        response = await client.post("/v1/admin/oauth-clients", json={**good, **bad}, headers=root)
        assert_problem(response, 422, "validation_error")
    loopback = await client.post(
        "/v1/admin/oauth-clients", json={**good, "redirect_uris": ["http://127.0.0.1:8765/cb"]}, headers=root
    )
    assert loopback.status_code == 201, loopback.text

    listed = (await client.get("/v1/admin/oauth-clients", headers=root)).json()
    assert [c["client_id"] for c in listed] == [loopback.json()["client_id"]]
    assert "client_secret" not in listed[0]
    rows = await sql(database_url, "SELECT secret_hash FROM oauth_clients")
    assert rows[0]["secret_hash"] != loopback.json()["client_secret"] and len(rows[0]["secret_hash"]) == 64
    actions = (await client.get("/v1/admin/audit-log", params={"action": "oauth_client.create"}, headers=root)).json()
    assert actions[0]["target_id"] == loopback.json()["client_id"]


async def test_disabling_a_client_ends_its_tokens(client):
    user = await signed_in_user(client)
    app = await new_client(client)
    tokens = await delegated(client, user["access_token"], app)
    root = bearer(await admin_token(client))
    assert (await client.delete(f"/v1/admin/oauth-clients/{app['client_id']}", headers=root)).status_code == 204
    assert_problem(await client.get("/v1/users/me", headers=bearer(tokens["access_token"])), 401, "token_revoked")
    token_error(await refresh(client, app, tokens["refresh_token"]), 401, "invalid_client")
    _, challenge = pkce()
    assert_problem(
        await client.get(
            "/v1/oauth/authorize", params=request_params(app, challenge), headers=bearer(user["access_token"])
        ),
        400,
        "invalid_client",
    )
    assert (await client.get("/v1/users/me/authorizations", headers=bearer(user["access_token"]))).json() == []
    assert_problem(
        await client.delete(f"/v1/admin/oauth-clients/{app['client_id']}", headers=root), 404, "oauth_client_not_found"
    )


async def test_token_endpoint_errors(client, database_url):
    user = await signed_in_user(client)
    app = await new_client(client)
    verifier, challenge = pkce()
    code = (await authorize(client, user["access_token"], app, challenge))["code"][0]
    auth = basic(app["client_id"], app["client_secret"])
    grant = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}

    token_error(await client.post("/v1/oauth/token", json=grant, headers=auth), 400, "invalid_request")  # not a form
    token_error(await client.post("/v1/oauth/token", data={}, headers=auth), 400, "invalid_request")
    token_error(
        await client.post("/v1/oauth/token", data={**grant, "grant_type": "password"}, headers=auth),
        400,
        "unsupported_grant_type",
    )
    repeated = "&".join(f"{k}={v}" for k, v in grant.items()) + "&code=again"
    token_error(
        await client.post("/v1/oauth/token", content=repeated, headers={**auth, **FORM}), 400, "invalid_request"
    )
    bad_secret = await client.post("/v1/oauth/token", data=grant, headers=basic(app["client_id"], "wrong"))
    token_error(bad_secret, 401, "invalid_client")
    assert bad_secret.headers["www-authenticate"].startswith("Basic")
    token_error(
        await client.post("/v1/oauth/token", data={**grant, "client_id": app["client_id"]}), 401, "invalid_client"
    )
    token_error(await client.post("/v1/oauth/token", data={**grant, "client_id": "pbc_nobody"}), 401, "invalid_client")
    token_error(
        await client.post("/v1/oauth/token", data={**grant, "client_secret": app["client_secret"]}, headers=auth),
        400,
        "invalid_request",
    )
    token_error(
        await client.post("/v1/oauth/token", data={**grant, "code": "nope"}, headers=auth), 400, "invalid_grant"
    )
    # client_secret_post works as well as HTTP Basic; an expired code does not
    await sql(database_url, "UPDATE oauth_codes SET expires_at = now() - interval '1 second'")
    posted = {**grant, "client_id": app["client_id"], "client_secret": app["client_secret"]}
    token_error(await client.post("/v1/oauth/token", data=posted), 400, "invalid_grant")
    code = (await authorize(client, user["access_token"], app, challenge))["code"][0]
    assert (await client.post("/v1/oauth/token", data={**posted, "code": code})).status_code == 200
