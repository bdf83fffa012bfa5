"""Delegated tokens (an application acting for a user) pass only routes that declare one of their scopes;
a user's own token passes every user route; administrative routes never accept a delegated token."""

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from kit.auth import (
    CurrentPrincipal,
    CurrentUser,
    TokenSigner,
    TokenVerifier,
    require_permission,
    require_roles,
    user_scope,
)
from kit.errors import install_error_handlers
from kit.testing import write_keypair


def _app(public: Path) -> FastAPI:
    wallet = APIRouter(prefix="/v1/wallet", dependencies=[user_scope("wallet")])

    @wallet.get("")
    async def my_wallet(user: CurrentUser) -> dict[str, str]:
        return {"user": user.subject}

    @wallet.get("/anyone")  # a route that only reads the principal
    async def anyone(principal: CurrentPrincipal) -> dict[str, str]:
        return {"kind": principal.kind}

    users = APIRouter(prefix="/v1/users")

    @users.get("/me", dependencies=[user_scope("profile")])
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"user": user.subject}

    @users.post("/me/password")  # no scope declared: first-party only
    async def password(user: CurrentUser) -> dict[str, str]:
        return {"user": user.subject}

    admin = APIRouter(prefix="/v1/admin", dependencies=[user_scope("wallet")])  # even a mistaken declaration

    @admin.get("/by-permission", dependencies=[Depends(require_permission("users:read"))])
    async def by_permission() -> dict[str, bool]:
        return {"ok": True}

    @admin.get("/by-role", dependencies=[Depends(require_roles("support"))])
    async def by_role() -> dict[str, bool]:
        return {"ok": True}

    app = FastAPI()
    install_error_handlers(app)
    for router in (wallet, users, admin):
        app.include_router(router)

    class _Runtime:
        verifier = TokenVerifier.from_file(public, "iss", "aud")

    app.state.runtime = _Runtime()
    return app


async def test_delegated_tokens_are_limited_to_declared_scopes(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path)
    signer = TokenSigner.from_file(private, "iss", "aud")
    own = signer.issue("8d0f1c52-8f4e-4d7b-9a53-0e6d2f4a1b11")
    for_wallet = signer.issue("8d0f1c52-8f4e-4d7b-9a53-0e6d2f4a1b11", scope="wallet", client_id="pbc_app")
    for_profile = signer.issue("8d0f1c52-8f4e-4d7b-9a53-0e6d2f4a1b11", scope="profile messages", client_id="pbc_app")
    # a delegated token that claims administrative things still gets nothing administrative
    forged_roles = signer.issue("a", kind="admin", roles=["super_admin"], scope="wallet", client_id="pbc_app")
    support = signer.issue("a", kind="admin", roles=["support"])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(public)), base_url="http://t") as client:

        async def answer(path: str, token: str, method: str = "GET") -> tuple[int, str]:
            response = await client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            return response.status_code, response.json().get("code", "")

        assert await answer("/v1/wallet", own) == (200, "")
        assert await answer("/v1/users/me", own) == (200, "")
        assert await answer("/v1/users/me/password", own, "POST") == (200, "")

        assert await answer("/v1/wallet", for_wallet) == (200, "")
        assert await answer("/v1/wallet/anyone", for_wallet) == (200, "")
        assert await answer("/v1/users/me", for_wallet) == (403, "insufficient_scope")
        assert await answer("/v1/users/me/password", for_wallet, "POST") == (403, "insufficient_scope")

        assert await answer("/v1/users/me", for_profile) == (200, "")
        assert await answer("/v1/wallet", for_profile) == (403, "insufficient_scope")
        assert await answer("/v1/wallet/anyone", for_profile) == (403, "insufficient_scope")

        assert await answer("/v1/admin/by-permission", support) == (200, "")
        assert await answer("/v1/admin/by-role", support) == (200, "")
        for token in (for_wallet, forged_roles):
            assert (await answer("/v1/admin/by-permission", token))[0] == 403
            assert (await answer("/v1/admin/by-role", token))[0] == 403


def test_unknown_scopes_are_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="unknown user scope"):
        user_scope("everything")
