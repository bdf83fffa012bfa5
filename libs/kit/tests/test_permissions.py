"""Roles map to permissions in one shared table; clients (API keys, apps) carry permissions as scopes."""

import httpx
from fastapi import APIRouter, Depends, FastAPI

from kit.auth import ADMIN_ROLES, ROLE_PERMISSIONS, Principal, TokenSigner, TokenVerifier, require_permission
from kit.errors import install_error_handlers
from kit.testing import write_keypair


def test_roles_and_permissions() -> None:
    assert {"super_admin", "operator", "field_maintenance", "support", "finance", "analyst"} == ADMIN_ROLES
    root = Principal("a", kind="admin", roles=frozenset({"super_admin"}))
    assert root.can("users:block") and root.can("anything:at-all")
    support = Principal("a", kind="admin", roles=frozenset({"support"}))
    assert support.can("users:block") and not support.can("payments:refund")
    both = Principal("a", kind="admin", roles=frozenset({"support", "finance"}))
    assert both.can("users:block") and both.can("payments:refund")
    # a user's token never grants permissions, whatever roles or scopes it claims
    user = Principal("u", kind="user", roles=frozenset({"super_admin"}), scopes=frozenset({"users:read"}))
    assert user.permissions == frozenset() and not user.can("users:read")
    client = Principal("k", kind="client", scopes=frozenset({"stats:read"}))
    assert client.can("stats:read") and not client.can("users:read")
    assert all(isinstance(p, frozenset) for p in ROLE_PERMISSIONS.values())


async def test_require_permission(tmp_path) -> None:
    private, public = write_keypair(tmp_path)
    signer = TokenSigner.from_file(private, "iss", "aud")
    router = APIRouter()

    @router.get("/block", dependencies=[Depends(require_permission("users:block"))])
    async def block() -> dict[str, bool]:
        return {"ok": True}

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)

    class _Runtime:
        verifier = TokenVerifier.from_file(public, "iss", "aud")

    app.state.runtime = _Runtime()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

        async def status(token: str) -> int:
            return (await client.get("/block", headers={"Authorization": f"Bearer {token}"})).status_code

        assert await status(signer.issue("a", kind="admin", roles=["support"])) == 200
        assert await status(signer.issue("a", kind="admin", roles=["super_admin"])) == 200
        assert await status(signer.issue("a", kind="admin", roles=["analyst"])) == 403
        assert await status(signer.issue("u", kind="user", roles=["super_admin"])) == 403
        assert await status(signer.issue("k", kind="client", scope="users:block")) == 200
        assert await status(signer.issue("k", kind="client", scope="users:read")) == 403
        assert (await client.get("/block")).status_code == 401
