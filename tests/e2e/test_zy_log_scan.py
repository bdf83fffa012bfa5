"""Tokens, secrets and personal data never appear in the logs (issue 15). Runs a flow of its own with the
real services (a user registers by SMS code, signs in, refreshes, tops up, borrows and returns, opens a
ticket, deregisters; an administrator signs in, creates an API key and trades it for a token), then reads
every log of the stack (the six services, the console, the broker-auth sidecar, Mosquitto, the broker;
also what the e2e files before this one left there) and fails on any of:

- a secret this run knows: the user's and the administrator's passwords, the SMS code, access and refresh
  tokens, the API key's secret, the device-svc broker password, every device's password from the fleet file;
- anything shaped like one, whoever it belongs to: a JWT, an API key, a PEM private key;
- a full mobile number (a masked one, `+86137****5678`, is fine);
- a payment card number (Luhn-valid, a card scheme's prefix).

Named `zy` to run after the other flows and before the fuzzing (`test_zz_fuzz.py` sends random digits)."""

import json
import os
import re
import uuid
from pathlib import Path

import pytest
from mesh import Mesh
from platform_client import wait_for
from test_rental_flow import _cabinet_with_bank, _cabinet_with_free_slot, _rental_in

pytestmark = pytest.mark.e2e

LOG_DIR = Path(os.environ.get("PB_STATE_DIR", ".state/test")) / "logs"

SHAPES = {
    "jwt": re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"),
    "api_key": re.compile(r"pbk_[0-9a-f]{32}\.[\w-]{16,}"),
    "private_key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|PRIVATE KEY-----"),
    "mobile_number": re.compile(r"(?<![\w.+*-])(?:\+?86)?1[3-9]\d{9}(?![\w*])"),
}
CARD = re.compile(r"(?<![\w.])(?:4\d{12}(?:\d{3})?|5[1-5]\d{14}|62\d{14,17}|3[47]\d{13})(?!\w)")


def luhn(number: str) -> bool:
    total = 0
    for i, digit in enumerate(reversed(number)):
        d = int(digit) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def fleet_passwords() -> list[str]:
    path = os.environ.get("PB_FLEET_FILE")
    if not path or not Path(path).exists():
        return []
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "password" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(Path(path).read_text()))
    return found


def scan(paths: list[Path], secrets: dict[str, str]) -> list[str]:
    """Every finding as `file:line: what` (never the value itself)."""
    known = {name: re.compile(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])") for name, value in secrets.items()}
    findings = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for n, line in enumerate(lines, 1):
                what = [name for name, pattern in known.items() if pattern.search(line)]
                what += [name for name, pattern in SHAPES.items() if pattern.search(line)]
                what += ["card_number" for m in CARD.finditer(line) if luhn(m.group())][:1]
                if what:
                    findings.append(f"{path.name}:{n}: {', '.join(sorted(set(what)))}")
    return findings


async def test_logs_hold_no_secrets_and_no_personal_data(mesh: Mesh) -> None:
    assert LOG_DIR.is_dir(), f"no logs at {LOG_DIR}"
    api = mesh.client()
    phone = f"+86137{uuid.uuid4().int % 100_000_000:08d}"
    password = f"Log-scan-{uuid.uuid4().hex[:12]}"
    code = await api.sms_code(phone, "register")
    terms = (await api.call("GET", f"{api.urls.user}/v1/terms")).json()
    body = {
        "phone": phone,
        "sms_code": code,
        "password": password,
        "terms_version": terms["version"],
        "terms_accepted": True,
    }
    registered = await api.call("POST", f"{api.urls.user}/v1/users", json=body)
    assert registered.status == 201, registered.response.text
    wrong = await api.call("POST", f"{api.urls.user}/v1/sessions", json={"login": phone, "password": password + "x"})
    assert wrong.status == 401  # a failed login is logged: without the password tried
    signed_in = await api.login(phone, password)
    assert signed_in.status == 200, signed_in.response.text
    refresh_token = signed_in.json()["refresh_token"]
    refreshed = await api.call("POST", f"{api.urls.user}/v1/sessions/refresh", json={"refresh_token": refresh_token})
    assert refreshed.status == 200, refreshed.response.text
    api.token = refreshed.json()["access_token"]
    refresh_token = refreshed.json()["refresh_token"]

    top_up = await api.top_up(500)
    assert top_up.status == 201, top_up.response.text

    async def paid() -> bool:
        status: str = (await api.top_up_status(top_up.json()["top_up_id"])).json()["status"]
        return status == "succeeded"

    await wait_for(paid, timeout_s=10)
    source = await _cabinet_with_bank(api)
    borrowed = await api.borrow(source["id"])
    assert borrowed.status == 201, borrowed.response.text
    rental = borrowed.json()
    target = await _cabinet_with_free_slot(api, exclude=source["id"])
    cabinet = mesh.fleet[target["id"]]
    assert (await cabinet.wait_ack(await cabinet.return_bank(rental["bank_id"]), timeout_s=5)) is not None
    await _rental_in(api, rental["rental_id"], {"settled"})
    ticket = await api.report("other", "The app asked me twice for my password", bank_id=rental["bank_id"])
    assert ticket.status == 201, ticket.response.text

    admin_password = os.environ.get("ADMIN_BOOTSTRAP_PASSWORD", "dev-admin-password")
    admin = await api.admin_login(os.environ.get("ADMIN_BOOTSTRAP_LOGIN", "admin"), admin_password)
    key = await api.call(
        "POST", f"{api.urls.user}/v1/admin/api-keys", token=admin, json={"name": "log scan", "scopes": ["stats:read"]}
    )
    assert key.status == 201, key.response.text
    client_id, _, key_secret = key.json()["api_key"].partition(".")
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": key_secret}
    issued = await api.call("POST", f"{api.urls.user}/v1/oauth/token", data=form)
    assert issued.status == 200, issued.response.text
    user_token = api.token
    assert user_token is not None

    async def deregistered() -> bool:
        answer = await api.call("POST", f"{api.urls.user}/v1/users/me/deregistration", json={"password": password})
        assert answer.status in (200, 409), answer.response.text  # 409: the rental's payment not seen yet
        return answer.status == 200

    await wait_for(deregistered, timeout_s=20, interval_s=0.5)

    secrets = {
        "user_password": password,
        "e2e_password": "e2e-password-1",
        "admin_password": admin_password,
        "sms_code": code,
        "access_token": user_token,
        "refresh_token": refresh_token,
        "admin_token": admin,
        "api_key_secret": key_secret,
        "oauth_token": issued.json()["access_token"],
        "phone": phone.removeprefix("+86"),
        "mqtt_password": os.environ["MQTT_PASSWORD"],
    }
    secrets |= {f"device_password_{i}": p for i, p in enumerate(fleet_passwords())}
    assert len(secrets) > 11, "the fleet file's device passwords were not found"

    async def flushed() -> bool:
        # The services log as the flow goes; the deregistration is the last thing they hear of.
        return any("deregist" in p.read_text(errors="replace") for p in LOG_DIR.glob("*.log"))

    await wait_for(flushed, timeout_s=10)
    findings = scan(sorted(LOG_DIR.glob("*.log")), secrets)
    assert not findings, f"{len(findings)} log lines hold secrets or personal data:\n" + "\n".join(findings[:50])


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The detector itself, on a planted log: each kind found, masked and ordinary values left alone."""
    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLWJ5dGVz"
    planted = tmp_path / "planted.log"
    planted.write_text(
        "\n".join(
            [
                '{"msg": "login", "phone": "+8613712345678"}',
                f'{{"msg": "auth", "authorization": "Bearer {token}"}}',
                '{"msg": "key", "value": "pbk_0123456789abcdef0123456789abcdef.abcdefghijklmnopqrstuvwx"}',
                '{"msg": "card", "pan": "4111111111111111"}',
                '{"msg": "secret", "password": "hunter2-xyz"}',
                '{"msg": "pem", "key": "-----BEGIN PRIVATE KEY-----"}',
                '{"msg": "fine", "phone": "+86137****5678", "ts_ms": 1765000000000, "id": "CAB-0001"}',
            ]
        )
    )
    assert scan([planted], {"user_password": "hunter2-xyz"}) == [
        "planted.log:1: mobile_number",
        "planted.log:2: jwt",
        "planted.log:3: api_key",
        "planted.log:4: card_number",
        "planted.log:5: user_password",
        "planted.log:6: private_key",
    ]
