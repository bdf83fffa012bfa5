from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from kit.testing import (
    app_client,
    kafka_bootstrap,
    migrated_database,
    truncate_all,
)
from user_svc.main import create_app
from user_svc.settings import Settings

SERVICE_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
async def database_url() -> str:
    return await migrated_database("user", SERVICE_DIR)


@pytest.fixture
def settings(database_url: str, keypair: tuple[Path, Path]) -> Settings:
    private, public = keypair
    return Settings(
        pb_env="test",
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap(),
        jwt_private_key_file=private,
        jwt_public_key_file=public,
        outbox_poll_interval_s=0.1,
        # Cheap hashes keep the suite fast; the parameters are settings, the code path is the same.
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        password_hash_parallelism=1,
        admin_bootstrap_login="root-admin",
        admin_bootstrap_password=SecretStr("test-admin-passphrase"),
        # Tests send several codes to one number quickly; the limits have their own tests.
        code_resend_interval_s=0,
        code_max_per_destination=50,
        code_max_per_client=200,
        # Only the deregistration test needs the rentals/payments projection; apps started and
        # stopped in quick succession would otherwise keep rebalancing one consumer group.
        obligations_consumer=False,
        sms_commands_consumer=False,
        audit_trail_consumer=False,  # test_staff.py turns it on
    )


@pytest.fixture
async def client(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await truncate_all(database_url)
    async with app_client(create_app(settings)) as c:
        yield c
