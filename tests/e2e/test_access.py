"""Access across the mesh: a revoked access token is refused by every service within a couple of
seconds (not when it expires), and an application acting for a user reaches only what was granted."""

import base64
import hashlib
import os
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from mesh import Mesh, new_user
from platform_client import PlatformClient, wait_for

pytestmark = pytest.mark.e2e

REVOCATION_BUDGET_MS = 3000
REDIRECT = "https://partner.example.com/cb"


async def _refused_everywhere(api: PlatformClient, token: str, urls: list[str]) -> float:
    """Milliseconds until every URL answers 401 token_revoked to `token`."""

    async def all_refused() -> bool:
        for url in urls:
            answer = await api.call("GET", url, token=token)
            if answer.status != 401 or answer.json().get("code") != "token_revoked":
                return False
        return True

    _, ms = await wait_for(all_refused, timeout_s=10, interval_s=0.05)
    return ms


async def test_logout_revokes_the_access_token_in_every_service(mesh: Mesh) -> None:
    api = await new_user(mesh, balance_fen=0)
    assert api.token is not None
    token = api.token
    urls = [
        f"{api.urls.asset}/v1/wallet",
        f"{api.urls.billing}/v1/rentals",
        f"{api.urls.notify}/v1/messages",
        f"{api.urls.device}/v1/cabinets",
    ]
    for url in urls:
        assert (await api.call("GET", url)).status == 200, url

    logout = await api.call("POST", f"{api.urls.user}/v1/sessions/logout", json={})
    assert logout.status == 204, logout.response.text

    ms = await _refused_everywhere(api, token, urls)
    assert ms < REVOCATION_BUDGET_MS, f"the revoked token was still accepted after {ms:.0f} ms"


async def test_an_application_reaches_only_its_scopes_until_the_user_revokes_it(mesh: Mesh) -> None:
    api = await new_user(mesh, balance_fen=0)
    admin = await api.admin_login(
        os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"),
        os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password"),
    )
    registered = await api.call(
        "POST",
        f"{api.urls.user}/v1/admin/oauth-clients",
        token=admin,
        json={"name": "e2e partner", "redirect_uris": [REDIRECT], "scopes": ["wallet", "map"], "confidential": False},
    )
    assert registered.status == 201, registered.response.text
    client_id = registered.json()["client_id"]

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    consent = await api.call(
        "POST",
        f"{api.urls.user}/v1/oauth/authorize",
        json={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "wallet map",
            "state": "e2e",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "approve": True,
        },
    )
    assert consent.status == 200, consent.response.text
    code = parse_qs(urlsplit(consent.json()["redirect_to"]).query)["code"][0]
    exchanged = await api.http.post(
        f"{api.urls.user}/v1/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": client_id,
        },
    )
    assert exchanged.status_code == 200, exchanged.text
    delegated = exchanged.json()["access_token"]

    assert (await api.call("GET", f"{api.urls.asset}/v1/wallet", token=delegated)).status == 200
    assert (await api.call("GET", f"{api.urls.device}/v1/cabinets", token=delegated)).status == 200
    for url in (
        f"{api.urls.billing}/v1/rentals",  # not granted
        f"{api.urls.notify}/v1/messages",  # not granted
        f"{api.urls.user}/v1/users/me",  # not granted
        f"{api.urls.billing}/v1/admin/disputes",  # administrative: never
        f"{api.urls.analytics}/v1/stats/overview",  # administrative: never
    ):
        answer = await api.call("GET", url, token=delegated)
        assert answer.status == 403, (url, answer.response.text)

    revoked = await api.call("DELETE", f"{api.urls.user}/v1/users/me/authorizations/{client_id}")
    assert revoked.status == 204, revoked.response.text
    ms = await _refused_everywhere(api, delegated, [f"{api.urls.asset}/v1/wallet", f"{api.urls.device}/v1/cabinets"])
    assert ms < REVOCATION_BUDGET_MS, f"the application's token was still accepted after {ms:.0f} ms"
