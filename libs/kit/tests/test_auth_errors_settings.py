import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import SecretStr, ValidationError

import kit.auth
from kit.auth import CurrentPrincipal, TokenRevoked, TokenSigner, TokenVerifier, require_roles
from kit.errors import BusinessError, Conflict, Unauthorized, install_error_handlers
from kit.health import ObservabilityMiddleware
from kit.revocation import RevocationList
from kit.settings import ServiceSettings
from kit.testing import write_keypair


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keypair(tmp_path_factory.mktemp("keys"))


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_signed_token_verifies_and_carries_roles(keys: tuple[Path, Path]) -> None:
    signer = TokenSigner.from_file(keys[0], "iss", "aud")
    verifier = TokenVerifier.from_file(keys[1], "iss", "aud")
    principal = verifier.verify(signer.issue("u1", kind="admin", roles=["operator"], scope="stats:read"))
    assert principal.subject == "u1"
    assert principal.kind == "admin"
    assert principal.roles == frozenset({"operator"})
    assert principal.scopes == frozenset({"stats:read"})


def test_a_verified_token_is_remembered_but_revocation_and_expiry_apply_on_every_call(
    keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = TokenSigner.from_file(keys[0], "iss", "aud")
    revocations = RevocationList()
    verifier = TokenVerifier(keys[1].read_bytes(), "iss", "aud", revocations, cache_size=2)
    token = signer.issue("u1")
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # remembered: no second signature check
    revocations.add([first.token_id], datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(TokenRevoked):
        verifier.verify(token)
    others = [signer.issue(f"u{n}") for n in range(2, 5)]
    for other in others:
        verifier.verify(other)
    assert list(verifier._verified) == others[1:]  # bounded: the oldest were forgotten
    after_expiry = time.time() + signer.ttl_s
    monkeypatch.setattr(kit.auth, "time", SimpleNamespace(time=lambda: after_expiry))
    for other in others[1:]:  # remembered, and still refused once expired
        with pytest.raises(Unauthorized, match="expired"):
            verifier.verify(other)


def test_forged_tokens_are_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    verifier = TokenVerifier.from_file(keys[1], "iss", "aud")
    now = int(time.time())
    claims = {"iss": "iss", "aud": "aud", "sub": "u1", "iat": now, "exp": now + 60, "jti": "x"}
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    hmac_with_public_key = jwt.encode(claims, "an-attacker-chosen-hmac-secret-of-32-bytes+", algorithm="HS256")
    other_key = TokenSigner.from_file(write_keypair(tmp_path)[0], "iss", "aud").issue("u1")
    wrong_issuer = TokenSigner.from_file(keys[0], "other", "aud").issue("u1")
    expired = TokenSigner.from_file(keys[0], "iss", "aud", ttl_s=-10).issue("u1")
    good = TokenSigner.from_file(keys[0], "iss", "aud").issue("u1")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (alg_none, hmac_with_public_key, other_key, wrong_issuer, expired, tampered, "garbage"):
        with pytest.raises(Unauthorized):
            verifier.verify(token)


class SlotTaken(Conflict):
    code = "slot_taken"
    title = "That slot is taken"


async def test_errors_render_as_problem_json_with_stable_codes(keys: tuple[Path, Path]) -> None:
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise SlotTaken("slot 3 holds PB-1", slot=3)

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("bug")

    @router.get("/admin")
    async def admin(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.subject}

    @router.get("/ops", dependencies=[Depends(require_roles("operator"))])
    async def ops() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/items/{n}")
    async def items(n: int) -> dict[str, int]:
        return {"n": n}

    app = FastAPI()
    app.add_middleware(ObservabilityMiddleware)
    install_error_handlers(app)
    app.include_router(router)

    class _Runtime:
        verifier = TokenVerifier.from_file(keys[1], "iss", "aud")

    app.state.runtime = _Runtime()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom", headers={"X-Correlation-ID": "abc"})
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "slot_taken"
        assert r.json()["slot"] == 3
        assert r.json()["correlation_id"] == "abc"
        assert r.headers["X-Correlation-ID"] == "abc"
        r = await client.get("/items/notanumber")
        assert r.status_code == 422
        assert r.json()["code"] == "validation_error"
        assert r.json()["errors"][0]["loc"] == ["path", "n"]
        r = await client.get("/nowhere")
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        r = await client.get("/admin")
        assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        token = TokenSigner.from_file(keys[0], "iss", "aud").issue("u9")
        r = await client.get("/admin", headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"sub": "u9"}
        r = await client.get("/ops", headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["code"]) == (403, "forbidden")
        operator = TokenSigner.from_file(keys[0], "iss", "aud").issue("u9", kind="admin", roles=["operator"])
        r = await client.get("/ops", headers={"Authorization": f"Bearer {operator}"})
        assert r.json() == {"ok": True}
        r = await client.get("/crash")
        assert (r.status_code, r.json()["code"]) == (500, "internal_error")
        assert "bug" not in r.text


def test_business_error_defaults() -> None:
    err = BusinessError()
    assert (err.status, err.code, err.detail) == (400, "bad_request", "Bad request")


class _WithSecret(ServiceSettings):
    payment_secret: SecretStr = SecretStr("dev-secret")


def test_settings_refuse_placeholder_secrets_only_in_production(
    keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JWT_PUBLIC_KEY_FILE", "PAYMENT_SECRET", "PB_ENV"):
        monkeypatch.delenv(name, raising=False)
    assert _WithSecret(pb_env="development").payment_secret.get_secret_value() == "dev-secret"
    with pytest.raises(ValidationError, match="PAYMENT_SECRET"):
        _WithSecret(pb_env="production", jwt_public_key_file=keys[1])
    with pytest.raises(ValidationError, match="PAYMENT_SECRET"):
        _WithSecret(pb_env="production", jwt_public_key_file=keys[1], payment_secret=SecretStr("changeme"))
    ok = _WithSecret(pb_env="production", jwt_public_key_file=keys[1], payment_secret=SecretStr("s3cr3t-l0ng-r4nd0m"))
    assert ok.pb_env == "production"
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY_FILE"):
        _WithSecret(pb_env="production", payment_secret=SecretStr("s3cr3t-l0ng-r4nd0m"))
