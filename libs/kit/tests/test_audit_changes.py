"""Audit entries carry the changed fields' old and new values, secrets masked (kit.audit, issue 15)."""

from sqlalchemy import BigInteger, String, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.audit import MASKED, StaffAudit, changes, mask_secrets, row_state
from kit.testing import kit_database


def test_only_changed_fields_are_recorded_old_and_new() -> None:
    before = {"name": "Mall", "price": 100, "hours": "8-22", "gone": 1}
    after = {"name": "Mall", "price": 120, "hours": "8-23", "new": 2}
    assert changes(before, after) == (
        {"price": 100, "hours": "8-22", "gone": 1, "new": None},
        {"price": 120, "hours": "8-23", "gone": None, "new": 2},
    )
    entry = StaffAudit("cabinet.update", "cabinet", "CAB-1")
    entry.changed(before, after, reason="moved")
    assert (entry.before, entry.after, entry.reason) == (
        {"price": 100, "hours": "8-22", "gone": 1, "new": None},
        {"price": 120, "hours": "8-23", "gone": None, "new": 2},
        "moved",
    )
    assert changes(before, before) == ({}, {})


def test_secrets_are_masked_whatever_their_depth() -> None:
    values = {
        "password": "hunter2",
        "webhook": {"url": "https://p.example", "secret": "s3cr3t", "signing_secret": None},
        "totp_secret": "JBSWY3DP",
        "password_hash": "$argon2id$...",
        "api_key": "k",
        "idempotency_key": "abc",
        "state": "active",
    }
    assert mask_secrets(values) == {
        "password": MASKED,
        "webhook": {"url": "https://p.example", "secret": MASKED, "signing_secret": None},
        "totp_secret": MASKED,
        "password_hash": MASKED,
        "api_key": MASKED,
        "idempotency_key": "abc",
        "state": "active",
    }
    assert mask_secrets(None) is None


class _Base(DeclarativeBase):
    pass


class _Thing(_Base):
    __tablename__ = "audit_things"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(10))


async def test_row_state_reads_the_row_and_finds_none_for_an_id_the_column_cannot_hold() -> None:
    """Read before the endpoint's own validation has refused a bad path parameter: an out-of-range or
    malformed id finds no row instead of failing the query (the fuzzer's 2**63 once made it a 500)."""
    ddl = "CREATE TABLE audit_things (id bigint PRIMARY KEY, name varchar(8) UNIQUE, state varchar(10))"
    async with kit_database("pb_test_kit_audit", ddl) as engine:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO audit_things VALUES (1, 'one', 'active')"))
        async with AsyncSession(engine) as session:
            by_id, by_name = row_state(_Thing), row_state(_Thing, "name")
            assert await by_id(session, "1") == {"id": 1, "name": "one", "state": "active"}
            assert await by_id(session, str(2**63)) is None
            assert await by_id(session, "not-a-number") is None
            assert await by_name(session, "x" * 9) is None
            await session.execute(text("UPDATE audit_things SET state = 'retired' WHERE id = 1"))
            assert (await by_id(session, "1") or {})["state"] == "retired"  # an update made as SQL is seen
