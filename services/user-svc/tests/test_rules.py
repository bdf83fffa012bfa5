from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from user_svc.codes.provider import DeliveryFailed, NoProvider
from user_svc.errors import TermsNotAccepted, TermsOutdated
from user_svc.rules import (
    RuleViolation,
    check_password,
    normalise_admin_login,
    normalise_display_name,
    normalise_phone,
)
from user_svc.settings import DEV_ADMIN_LOGIN, DEV_ADMIN_PASSWORD, Settings
from user_svc.terms.service import Terms
from user_svc.users.schemas import RegisterUserIn


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+8613800138000", "+8613800138000"),
        (" +86 138-0013-8000 ", "+8613800138000"),
        ("+14155552671", "+14155552671"),
        ("+442071838750", "+442071838750"),
    ],
)
def test_valid_phones_are_normalised(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "13800138000",  # no country code
        "+0861380013800",  # country code cannot start with 0
        "+8612800138000",  # +86 mobiles start 13-19
        "+86138001380001",  # +86 mobile with 12 digits
        "+86 138 0013 800",  # +86 mobile with 10 digits
        "+1234567890123456",  # longer than E.164 allows
        "+12345",  # too short
        "+86138OO138000",  # letters
        "+٨٦١٣٨٠٠١٣٨٠٠٠",  # non-ASCII digits
        "+86(138)00138000",
        "++8613800138000",
    ],
)
def test_invalid_phones_are_refused(raw):
    with pytest.raises(RuleViolation) as info:
        normalise_phone(raw)
    assert info.value.code == "invalid_phone"


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True).filter(lambda p: not p.startswith("+86")))
def test_normalising_is_idempotent(phone):
    assert normalise_phone(normalise_phone(phone)) == phone


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short7!", "password_too_short"),
        ("x" * 129, "password_too_long"),
        (" " * 10, "password_blank"),
        ("abc\x00defgh", "password_invalid_characters"),
    ],
)
def test_password_rules(password, code):
    with pytest.raises(RuleViolation) as info:
        check_password(password)
    assert info.value.code == code


def test_good_passwords_pass():
    for password in ("12345678", "correct horse battery staple", "密码密码密码密码", "x" * 128):
        assert check_password(password) == password


def test_display_name_rules():
    assert normalise_display_name(None) is None
    assert normalise_display_name("   ") is None
    assert normalise_display_name("  小明 ") == "小明"
    with pytest.raises(RuleViolation):
        normalise_display_name("a" * 65)
    with pytest.raises(RuleViolation):
        normalise_display_name("bad\u202ename")  # bidi override is a format (Cf) character


def test_admin_login_rules():
    assert normalise_admin_login(" Ops.Lead@example ") == "ops.lead@example"
    for bad in ("ab", "-admin", "has space", "a" * 65):
        with pytest.raises(RuleViolation):
            normalise_admin_login(bad)


def test_schema_reports_rule_codes():
    with pytest.raises(ValidationError) as info:
        RegisterUserIn.model_validate({"phone": "123", "password": "short", "terms_version": "v", "sms_code": "123456"})
    types = {e["type"] for e in info.value.errors()}
    assert types == {"invalid_phone", "password_too_short"}


def test_terms_acceptance():
    terms = Terms(version="2026-11", text="...")
    terms.check_acceptance(accepted=True, version="2026-11")
    with pytest.raises(TermsNotAccepted):
        terms.check_acceptance(accepted=False, version="2026-11")
    with pytest.raises(TermsOutdated):
        terms.check_acceptance(accepted=True, version="2025-01")


def _settings(**kwargs: Any) -> Settings:
    return Settings(jwt_private_key_file="/nonexistent/private.pem", **kwargs)


def test_dev_admin_defaults_apply_outside_production(monkeypatch):
    monkeypatch.delenv("ADMIN_BOOTSTRAP_LOGIN", raising=False)
    monkeypatch.delenv("ADMIN_BOOTSTRAP_PASSWORD", raising=False)
    s = _settings(pb_env="development")
    assert s.admin_bootstrap_login == DEV_ADMIN_LOGIN
    assert s.admin_bootstrap_password is not None
    assert s.admin_bootstrap_password.get_secret_value() == DEV_ADMIN_PASSWORD


def test_production_has_no_default_admin_and_refuses_dev_secrets(monkeypatch):
    monkeypatch.delenv("ADMIN_BOOTSTRAP_LOGIN", raising=False)
    monkeypatch.delenv("ADMIN_BOOTSTRAP_PASSWORD", raising=False)
    prod: dict[str, Any] = {
        "pb_env": "production",
        "jwt_public_key_file": "/nonexistent/public.pem",
        "admin_totp_key": SecretStr("a-real-totp-encryption-key"),
        "sms_provider": "none",
    }
    s = _settings(**prod)
    assert s.admin_bootstrap_login is None
    assert s.admin_bootstrap_password is None
    for password in (DEV_ADMIN_PASSWORD, "changeme"):
        with pytest.raises(ValidationError):
            _settings(**prod, admin_bootstrap_login="admin", admin_bootstrap_password=SecretStr(password))
    ok = _settings(**prod, admin_bootstrap_login="Admin", admin_bootstrap_password=SecretStr("a-real-long-secret"))
    assert ok.admin_bootstrap_login == "admin"
    assert ok.totp_enforced  # staff second factor required in production
    with pytest.raises(ValidationError):  # the development TOTP encryption key
        _settings(**{**prod, "admin_totp_key": SecretStr("dev-admin-totp-key-not-for-production")})


async def test_production_refuses_the_sms_sandbox(monkeypatch):
    """Issue 14: the sandbox only pretends to send codes; production refuses to start with it, and `none`
    sends nothing rather than pretending (a code request fails as code_delivery_failed)."""
    monkeypatch.delenv("SMS_PROVIDER", raising=False)
    prod: dict[str, Any] = {
        "pb_env": "production",
        "jwt_public_key_file": "/nonexistent/public.pem",
        "admin_totp_key": SecretStr("a-real-totp-encryption-key"),
    }
    with pytest.raises(ValidationError, match="SMS_PROVIDER=sandbox"):
        _settings(**prod)  # the default is the sandbox
    with pytest.raises(ValidationError, match="SMS_PROVIDER=sandbox"):
        _settings(**prod, sms_provider="sandbox")
    assert _settings(**prod, sms_provider="none").sms_provider == "none"
    assert _settings(pb_env="development").sms_provider == "sandbox"
    with pytest.raises(DeliveryFailed):
        await NoProvider().send(channel="sms", destination="+8613800000000", body="code 123456", code="123456")


def test_admin_bootstrap_needs_both_and_a_valid_password(monkeypatch):
    monkeypatch.delenv("ADMIN_BOOTSTRAP_PASSWORD", raising=False)
    with pytest.raises(ValidationError):
        _settings(pb_env="production", jwt_public_key_file="/x.pem", admin_bootstrap_login="admin")
    with pytest.raises(ValidationError):
        _settings(admin_bootstrap_login="admin", admin_bootstrap_password=SecretStr("short"))
