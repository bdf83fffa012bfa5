"""The benchmark's provisioning through device-svc's admin API (device_emulator.bench.provision), against a fake
of that API that keeps a registry as device-svc does: ids already registered are skipped, a new device's
password comes once in the import's answer. The real API is exercised by `make bench`."""

import json
from pathlib import Path
from typing import Any

import httpx

from device_emulator.bench import provision
from device_emulator.bench.swarm import read_fleet


class FakeAdminApi:
    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.requests: list[tuple[str, int]] = []
        self.issued = 0

    def _password(self) -> str:
        self.issued += 1
        return f"pw{self.issued}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/admin/sessions":
            return httpx.Response(200, json={"access_token": "staff-token"})
        assert request.headers["authorization"] == "Bearer staff-token"
        if path.endswith("/import"):
            items = json.loads(request.content)["items"]
            self.requests.append((path, len(items)))
            created: list[dict[str, Any]] = []
            skipped = []
            for item in items:
                if item["id"] in self.registered:
                    skipped.append(item["id"])
                    continue
                self.registered.add(item["id"])
                credential = path.startswith("/v1/admin/cabinets") or item.get("module")
                created.append(
                    {
                        "id": item["id"],
                        "kind": "cabinet" if "cabinets" in path else "bank",
                        "state": "active",
                        "credential": {"device_id": item["id"], "password": self._password(), "broker_version": 1}
                        if credential
                        else None,
                    }
                )
            return httpx.Response(200, json={"created": created, "skipped": skipped})
        if path.endswith("/credentials/rotate"):
            self.requests.append((path, 1))
            return httpx.Response(200, json={"device_id": path.split("/")[4], "password": self._password()})
        return httpx.Response(404)


async def _provision(fake: FakeAdminApi, plan: list[provision.PlannedCabinet], **kwargs: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        api = provision.AdminApi(http, "http://device", "http://user", ("admin", "pw"))
        return await provision.provision(api, plan, **kwargs)


def test_the_plan_is_reproducible_and_fills_all_but_two_slots() -> None:
    plan = provision.plan_fleet(3, 8, rng_seed=7, volinks_cabinets=1)
    assert plan == provision.plan_fleet(3, 8, rng_seed=7, volinks_cabinets=1)
    assert [c.cabinet_id for c in plan] == ["CAB-0001", "CAB-0002", "CAB-0003", "VL-CAB-0001"]
    assert [bank for bank, _ in plan[1].banks.values()] == [f"PB-{n:06d}" for n in range(7, 13)]
    assert sorted(plan[0].banks) == [1, 2, 3, 4, 5, 6] and all(60 <= pct <= 100 for _, pct in plan[0].banks.values())
    assert plan[3].protocol == "volinks" and plan[3].slot_count == 8 and plan[3].banks[1][0].startswith("VL-")


async def test_a_fleet_is_imported_in_a_few_requests_and_its_cabinets_start_with_their_banks(tmp_path: Path) -> None:
    fake = FakeAdminApi()
    plan = provision.plan_fleet(5, 4, rng_seed=1)
    cabinets, banks, done = await _provision(fake, plan, bank_modules=2, chunk=4)
    # 5 cabinets in chunks of 4, then their 10 banks (2 a cabinet) in chunks of 4
    assert fake.requests == [
        ("/v1/admin/cabinets/import", 4),
        ("/v1/admin/cabinets/import", 1),
        ("/v1/admin/banks/import", 4),
        ("/v1/admin/banks/import", 4),
        ("/v1/admin/banks/import", 2),
    ]
    assert (done.cabinets_created, done.banks_created, done.passwords_issued, done.rotated) == (5, 10, 7, 0)
    assert [b["bank_id"] for b in banks] == ["PB-000009", "PB-000010"]  # the last two banks have modules
    assert all(b["cabinet_id"] == "CAB-0005" and b["password"] for b in banks)

    fleet = tmp_path / "fleet.json"
    provision.write_fleet(fleet, {"host": "127.0.0.1", "port": 1883}, cabinets, banks)
    assert fleet.stat().st_mode & 0o777 == 0o600
    _, _, devices = read_fleet(fleet)
    assert devices[0].device_id == "CAB-0001" and devices[0].slot_count == 4
    assert [(slot, bank) for slot, bank, _ in devices[0].banks] == [(1, "PB-000001"), (2, "PB-000002")]
    assert devices[0].banks[0][2] == plan[0].banks[1][1]  # the battery it starts with


async def test_a_second_run_keeps_the_known_passwords_and_rotates_only_the_lost_ones(tmp_path: Path) -> None:
    fake = FakeAdminApi()
    plan = provision.plan_fleet(3, 4, rng_seed=1)
    cabinets, banks, _ = await _provision(fake, plan)
    fleet = tmp_path / "fleet.json"
    provision.write_fleet(fleet, {}, cabinets[:2], banks)  # the file lost CAB-0003
    fake.requests.clear()

    again, _, done = await _provision(fake, provision.plan_fleet(4, 4, rng_seed=1), known=provision.read_known(fleet))
    assert (done.cabinets_created, done.banks_created, done.rotated) == (1, 2, 1)
    assert ("/v1/admin/devices/CAB-0003/credentials/rotate", 1) in fake.requests
    assert again[:2] == cabinets[:2]  # registered and known: kept as they were
    assert again[2]["password"] != cabinets[2]["password"] and again[3]["cabinet_id"] == "CAB-0004"
