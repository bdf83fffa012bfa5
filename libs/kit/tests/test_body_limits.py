"""Request body size limits (kit.bodylimit, issue 15): a body over the limit is a 413 `payload_too_large`,
whether it declares its length or arrives in chunks, read by the kit's input guard or by the route; upload
routes have their own larger limit."""

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from pydantic import BaseModel

from kit.bodylimit import BodyLimitMiddleware
from kit.errors import install_error_handlers
from kit.inputs import InputGuardMiddleware
from kit.ratelimit import rate_class

LIMIT, UPLOAD_LIMIT = 2048, 8192


class Note(BaseModel):
    text: str


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/notes")
    async def note(body: Note) -> dict[str, int]:
        return {"length": len(body.text)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.post("/photos", dependencies=[rate_class("upload")])
    async def photo(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    app.add_middleware(InputGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, fastapi=app, max_body_bytes=LIMIT, max_upload_bytes=UPLOAD_LIMIT)
    return app


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 512):
        yield b"x" * 512


def _refused(response: httpx.Response, limit: int) -> bool:
    body = response.json()
    return response.status_code == 413 and body["code"] == "payload_too_large" and body["max_bytes"] == limit


async def test_bodies_over_the_limit_are_refused_and_uploads_have_their_own() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as client:
        assert (await client.post("/notes", json={"text": "a" * 1000})).json() == {"length": 1000}
        assert _refused(await client.post("/notes", json={"text": "a" * 3000}), LIMIT)  # declared length
        assert (await client.post("/raw", content=b"x" * LIMIT)).json() == {"length": LIMIT}
        assert _refused(await client.post("/raw", content=_chunks(4096)), LIMIT)  # chunked: counted as read
        json_chunks = client.post("/notes", content=_chunks(4096), headers={"content-type": "application/json"})
        assert _refused(await json_chunks, LIMIT)  # read by the input guard before routing
        assert (await client.post("/photos", content=b"x" * 6000)).json() == {"length": 6000}
        assert _refused(await client.post("/photos", content=b"x" * 9000), UPLOAD_LIMIT)
        assert _refused(await client.post("/photos", content=_chunks(9216)), UPLOAD_LIMIT)
