"""Integration: invoice requests for paid rentals and top-ups (real PG): stored with the receipt's amounts, one
open request per receipt, finance's CSV export, and the state machine (requested -> issued | rejected |
cancelled) refusing every other move."""

import csv
import io
import uuid
from typing import Any

import pytest

from asset_credit_svc.charges import service as charges
from asset_credit_svc.invoices.service import TRANSITIONS, InvoiceState
from contracts.events import ChargeRequested
from kit.db import unit_of_work

pytestmark = pytest.mark.integration


def staff(svc: Any, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.signer.issue('staff-' + role, kind='admin', roles=[role])}"}


async def test_invoice_requests_are_stored_exported_and_answered_once(svc: Any) -> None:
    user = await svc.funded_user(5000)
    [top_up] = (await svc.client.get("/v1/wallet/movements", headers=svc.auth(user))).json()["items"]
    rental = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=user, amount_fen=300)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await charges.settle(session, svc.runtime, rental, uuid.uuid4()) == "settled"

    async def ask(kind: str, of: Any, who: uuid.UUID = user, **body: Any) -> Any:
        body = {
            "kind": kind,
            "id": str(of),
            "buyer_type": "personal",
            "title": "Zhang San",
            "email": "z@example.com",
        } | body
        return await svc.client.post("/v1/wallet/invoice-requests", json=body, headers=svc.auth(who))

    assert (await ask("rental", rental.rental_id, buyer_type="company")).json()["code"] == "tax_id_required"
    assert (await ask("rental", rental.rental_id, email="not-an-address")).status_code == 422
    assert (await ask("rental", uuid.uuid4())).json()["code"] == "receipt_not_found"  # nothing paid
    assert (await ask("rental", rental.rental_id, who=uuid.uuid4())).json()["code"] == "receipt_not_found"
    asked = await ask("rental", rental.rental_id)
    assert asked.status_code == 201, asked.text
    by_rental = asked.json()
    assert (by_rental["status"], by_rental["amount_fen"], by_rental["vat_rate_percent"]) == ("requested", 300, 13)
    assert by_rental["vat_fen"] == 35  # 300 x 13 / 113, half up
    assert (await ask("rental", rental.rental_id)).json()["code"] == "invoice_already_requested"
    company = {"buyer_type": "company", "title": "深圳某某科技有限公司", "tax_id": "91440300MA5EXAMPLE"}
    by_top_up = (await ask("top_up", top_up["reference_id"], **company)).json()
    assert (by_top_up["status"], by_top_up["amount_fen"], by_top_up["vat_fen"]) == ("requested", 5000, None)

    finance = staff(svc, "finance")
    export = await svc.client.get(
        "/v1/admin/invoice-requests", params={"status": "requested", "format": "csv"}, headers=finance
    )
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert {(r["kind"], r["amount_fen"], r["tax_id"]) for r in rows} == {
        ("rental", "300", ""),
        ("top_up", "5000", company["tax_id"]),
    }
    path = "/v1/admin/invoice-requests"
    issued = await svc.client.post(
        f"{path}/{by_rental['request_id']}/issue", json={"invoice_no": "044031900111"}, headers=finance
    )
    assert (issued.json()["status"], issued.json()["invoice_no"]) == ("issued", "044031900111")
    again = await svc.client.post(f"{path}/{by_rental['request_id']}/reject", json={"reason": "late"}, headers=finance)
    assert again.json()["code"] == "illegal_invoice_transition"
    assert (
        await svc.client.post(f"{path}/{by_rental['request_id']}/cancel", headers=svc.auth(user))
    ).status_code == 404
    assert (
        await svc.client.post(f"/v1/wallet/invoice-requests/{by_rental['request_id']}/cancel", headers=svc.auth(user))
    ).json()["code"] == "illegal_invoice_transition"

    rejected = await svc.client.post(
        f"{path}/{by_top_up['request_id']}/reject", json={"reason": "wrong tax id"}, headers=finance
    )
    assert (rejected.json()["status"], rejected.json()["reject_reason"]) == ("rejected", "wrong tax id")
    retry = (await ask("top_up", by_top_up["subject_id"], **company)).json()  # asked again after a rejection
    assert retry["status"] == "requested"
    cancelled = await svc.client.post(
        f"/v1/wallet/invoice-requests/{retry['request_id']}/cancel", headers=svc.auth(user)
    )
    assert cancelled.json()["status"] == "cancelled"
    mine = (await svc.client.get("/v1/wallet/invoice-requests", headers=svc.auth(user))).json()["items"]
    assert sorted(r["status"] for r in mine) == ["cancelled", "issued", "rejected"]

    assert (
        await svc.client.post(
            f"{path}/{retry['request_id']}/issue", json={"invoice_no": "1"}, headers=staff(svc, "support")
        )
    ).status_code == 403
    assert (await svc.client.get(path, headers=svc.auth(user))).status_code == 403


def test_the_transition_table_covers_every_state_and_ends_in_terminal_ones() -> None:
    assert set(TRANSITIONS) == set(InvoiceState)
    terminal = {s for s, targets in TRANSITIONS.items() if not targets}
    assert terminal == {InvoiceState.ISSUED, InvoiceState.REJECTED, InvoiceState.CANCELLED}
    assert all(targets <= set(InvoiceState) for targets in TRANSITIONS.values())
