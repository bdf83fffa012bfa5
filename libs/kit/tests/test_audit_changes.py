"""Audit entries carry the changed fields' old and new values, secrets masked (kit.audit, issue 15)."""

from kit.audit import MASKED, StaffAudit, changes, mask_secrets


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
