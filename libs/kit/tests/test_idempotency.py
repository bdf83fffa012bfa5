from typing import Annotated

import httpx
from fastapi import Depends, FastAPI

from kit.errors import install_error_handlers
from kit.idempotency import IdempotencyKey, idempotency_key


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/default")
    async def default(key: IdempotencyKey) -> dict[str, str]:
        return {"key": key}

    @app.post("/short")
    async def short(key: Annotated[str, Depends(idempotency_key(5))]) -> dict[str, str]:
        return {"key": key}

    return app


async def test_the_key_is_required_trimmed_and_bounded() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/default", headers={"Idempotency-Key": "  k-1 "})
        assert (ok.status_code, ok.json()) == (200, {"key": "k-1"})
        for headers in ({}, {"Idempotency-Key": "   "}, {"Idempotency-Key": "x" * 201}):
            refused = await client.post("/default", headers=headers)
            assert refused.status_code == 400
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "idempotency_key_required"
        assert (await client.post("/short", headers={"Idempotency-Key": "12345"})).status_code == 200
        too_long = await client.post("/short", headers={"Idempotency-Key": "123456"})
        assert too_long.status_code == 400
        assert "1 to 5 characters" in too_long.json()["detail"]
