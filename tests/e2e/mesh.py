"""The whole mesh for end-to-end tests: the six services as real processes on the test stack
(PostgreSQL, Mosquitto, Kafka broker), a seeded fleet, and emulated cabinets in this process."""

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from platform_client import PlatformClient, Urls, wait_for

from device_emulator.fleet import Fleet

ROOT = Path(__file__).resolve().parents[2]
STACK_TOOL = os.environ.get("PB_STACK_TOOL", str(ROOT / "deploy" / "local" / "stack.py"))
STACK = os.environ.get("PB_STACK", "test")
START_BALANCE_FEN = 5000


def run_stack(command: str, *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, STACK_TOOL, command, "--stack", STACK, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"stack {command} failed:\n{result.stdout}\n{result.stderr}")


@dataclass
class Mesh:
    urls: Urls
    fleet: Fleet
    http: httpx.AsyncClient

    def client(self) -> PlatformClient:
        return PlatformClient(self.urls, self.http)


async def new_user(mesh: Mesh, balance_fen: int = START_BALANCE_FEN) -> PlatformClient:
    """A freshly registered, logged-in user whose wallet holds `balance_fen`."""
    api = mesh.client()
    phone = f"+86137{uuid.uuid4().int % 100_000_000:08d}"
    registered = await api.register(phone, "e2e-password-1")
    assert registered.status == 201, registered.response.text
    logged_in = await api.login(phone, "e2e-password-1")
    assert logged_in.status == 200, logged_in.response.text
    if balance_fen:
        top_up = await api.top_up(balance_fen)
        assert top_up.status == 201, top_up.response.text
        top_up_id = top_up.json()["top_up_id"]

        async def succeeded() -> dict[str, Any] | None:
            body: dict[str, Any] = (await api.top_up_status(top_up_id)).json()
            return body if body["status"] == "succeeded" else None

        await wait_for(succeeded, timeout_s=10)
    return api
