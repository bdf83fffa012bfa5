"""Fixtures for the end-to-end tests; the machinery is in mesh.py."""

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from console_http import Browserless
from mesh import Mesh, new_user, run_stack
from platform_client import PlatformClient, Urls, wait_for

from device_emulator.fleet import Fleet
from kit.httpclient import async_client


@pytest.fixture(scope="session")
async def mesh() -> AsyncIterator[Mesh]:
    if "USER_SVC_URL" not in os.environ:
        pytest.fail("run the e2e tests through `make test` (it exports the test stack's environment)")
    run_stack("start-services")
    run_stack("seed", "--", "--cabinets", "3", "--slots", "8")
    fleet = Fleet.from_file(Path(os.environ["PB_FLEET_FILE"]), heartbeat_s=5.0)
    started = await fleet.start_all(timeout_s=30)
    assert started, "the emulated cabinets did not connect to the broker"
    http = async_client(timeout=15.0)
    mesh = Mesh(Urls.from_env(), fleet, http)
    try:
        user = await new_user(mesh)

        async def all_online() -> bool:
            cabinets = await user.cabinets()
            return len(cabinets) == len(fleet.cabinets) and all(c["online"] for c in cabinets)

        await wait_for(all_online, timeout_s=20)
        yield mesh
    finally:
        await http.aclose()
        await fleet.stop_all()
        run_stack("stop-services")


@pytest.fixture
async def user(mesh: Mesh) -> PlatformClient:
    return await new_user(mesh)


@pytest.fixture
async def console() -> AsyncIterator[Callable[[], Browserless]]:
    url = os.environ.get("CONSOLE_URL")
    if not url:
        pytest.fail("CONSOLE_URL is not set: run through `make test` (the stack's env file sets it)")
    clients: list[httpx.AsyncClient] = []

    def make() -> Browserless:
        http = async_client(base_url=url.rstrip("/"), timeout=15.0)
        clients.append(http)
        return Browserless(http)

    yield make
    for http in clients:
        await http.aclose()
