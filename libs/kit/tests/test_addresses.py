"""The audit trail's "from where" follows the rate limits' rule (kit.addresses, issue 15): a forwarded
address is believed only from a trusted proxy."""

from types import SimpleNamespace

import httpx
from fastapi import FastAPI

from kit.addresses import parse_networks
from kit.correlation import get_client_address
from kit.health import ObservabilityMiddleware


def _app(trusted: list[str]) -> FastAPI:
    app = FastAPI()
    app.state.runtime = SimpleNamespace(trusted_proxies=parse_networks(trusted))

    @app.get("/who")
    async def who() -> dict[str, str | None]:
        return {"address": get_client_address()}

    app.add_middleware(ObservabilityMiddleware)
    return app


async def _address(app: FastAPI, peer: str, forwarded: str | None) -> str | None:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/who", headers=headers)
    address: str | None = response.json()["address"]
    return address


async def test_the_audited_address_believes_only_trusted_proxies() -> None:
    behind_proxy = _app(["10.0.0.0/8"])
    assert await _address(behind_proxy, "10.0.0.2", "6.6.6.6, 198.51.100.1") == "198.51.100.1"
    assert await _address(behind_proxy, "203.0.113.9", "198.51.100.1") == "203.0.113.9"  # its own words
    assert await _address(_app([]), "10.0.0.2", "198.51.100.1") == "10.0.0.2"  # no proxy configured
