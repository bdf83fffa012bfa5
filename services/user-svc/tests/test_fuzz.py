"""Property-based fuzzing of user-svc's OpenAPI with schemathesis: whatever the input, no 5xx.
The service runs for real (uvicorn in a thread, real PostgreSQL and Kafka); protected endpoints are
called with a real user's or administrator's token so the fuzzing gets past authentication."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr

from kit.testing import kafka_bootstrap
from user_svc.main import create_app
from user_svc.settings import Settings

pytestmark = pytest.mark.integration

PHONE = "+8613511112222"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(database_url: str, keypair: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    private, public = keypair
    settings = Settings(
        pb_env="test",
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap(),
        jwt_private_key_file=private,
        jwt_public_key_file=public,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        password_hash_parallelism=1,
        admin_bootstrap_login="fuzz-admin",
        admin_bootstrap_password=SecretStr("fuzz-admin-passphrase"),
        code_resend_interval_s=0,
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "user-svc did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=10) as http:
            admin = http.post("/v1/admin/sessions", json={"login": "fuzz-admin", "password": "fuzz-admin-passphrase"})
            admin_token = admin.json()["access_token"]
            assert http.post("/v1/sms-codes", json={"phone": PHONE, "purpose": "register"}).status_code == 202
            outbox = http.get(
                "/v1/dev/messages",
                params={"destination": PHONE, "limit": 1},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            code = outbox.json()[0]["code"]
            body = {
                "phone": PHONE,
                "sms_code": code,
                "password": "fuzz-password-1",
                "terms_version": settings.terms_version,
                "terms_accepted": True,
            }
            assert http.post("/v1/users", json=body).status_code in (201, 409)
            user = http.post("/v1/sessions", json={"login": PHONE, "password": "fuzz-password-1"})
            user_token = user.json()["access_token"]
        yield {"base": base, "admin": admin_token, "user": user_token}
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_no_server_errors(served: dict[str, Any]) -> None:
    # schemathesis's own pytest plugin does not work with this pytest; drive its strategies directly.
    schema = schemathesis.openapi.from_url(f"{served['base']}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            check(case, served)

        fuzz()


def check(case: Any, served: dict[str, Any]) -> None:
    admin_area = case.path.startswith(("/v1/admin/", "/v1/dev/"))
    headers = {"Authorization": f"Bearer {served['admin'] if admin_area else served['user']}"}
    if case.path == "/v1/sessions/logout":
        headers = {"Authorization": "Bearer not-a-token"}  # keep the fuzzing user's session alive
    response = case.call(base_url=served["base"], headers=headers)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        content_type = response.headers["content-type"]
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/problem+json"), response.text[:300]
        problem = response.json()
        assert problem["status"] == response.status_code and problem["code"]
        if problem["code"] == "validation_error":  # 422 with field details
            assert problem["errors"] and all({"loc", "msg", "type"} <= set(e) for e in problem["errors"])
