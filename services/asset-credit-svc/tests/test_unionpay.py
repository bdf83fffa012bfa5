"""Integration: the bank-card channel (UnionPay's online gateway, ACP 5.1.0) against a fake gateway on a real
port, with keys and a certificate chain made for the test (a root, a middle certificate it issued, and the
signing certificate "UnionPay" puts in every answer). The fake checks the merchant's signatures with the
merchant's public key found by `certId` (its own canonical form, not the adapter's), knows orders by
`(orderId, txnTime)`, signs its answers and notifications, sends duplicate, late and forged notifications and
can stall past the adapter's timeout. The user's browser is played by the test: it posts the signed form the
service handed out to the fake's front-end address, over HTTP."""

import asyncio
import base64
import hashlib
import io
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from asset_credit_svc.charges import service as charges
from asset_credit_svc.payments.providers import OrderState, PaymentProviderError, RefundState
from asset_credit_svc.payments.unionpay import order_id
from contracts.events import ChargeRequested
from kit.db import unit_of_work
from kit.testing import eventually

from .gateway_kit import (
    BEIJING,
    FakeGateway,
    cert_pem,
    certificate,
    fee_becomes_a_debt_paid_in_the_app,
    new_key,
    post_form,
    private_pem,
    sha256_rsa,
    sha256_rsa_ok,
    sql,
    top_up_status,
)

pytestmark = pytest.mark.integration

MER_ID = "777290058110048"
NOTIFY_URL = "http://test/v1/payments/bank_card/notify"
UNIONPAY_CN = "CFCA@中国银联股份有限公司@00040000:SIGN@00000001"


def digest(fields: dict[str, str]) -> bytes:
    """UnionPay's 5.1.0 signing content, written here independently of the adapter."""
    text_ = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature" and fields[k] != "")
    return hashlib.sha256(text_.encode()).hexdigest().encode()


def sign(key: rsa.RSAPrivateKey, fields: dict[str, str]) -> str:
    return sha256_rsa(key, digest(fields))


def signed_by(key: rsa.RSAPublicKey, fields: dict[str, str]) -> bool:
    return sha256_rsa_ok(key, digest(fields), fields.get("signature", ""))


@dataclass
class Trade:
    order_id: str
    txn_time: str
    amount: int
    query_id: str
    paid: bool = False
    refunds: dict[tuple[str, str], int] = field(default_factory=dict)  # (orderId, txnTime) -> fen
    refund_query_ids: dict[str, str] = field(default_factory=dict)  # refund orderId -> its queryId
    paid_at: datetime | None = None


# The ZM file's 42 fields (bytes, GBK), each followed by one space: 《全渠道平台接入接口规范 第3部分 文件接口》 6.1.
ZM_WIDTHS = (
    3,
    11,
    11,
    6,
    10,
    19,
    12,
    4,
    2,
    21,
    2,
    32,
    2,
    6,
    10,
    13,
    13,
    4,
    15,
    2,
    2,
    6,
    2,
    4,
    32,
    1,
    21,
    15,
    1,
    15,
    32,
)
ZM_WIDTHS += (13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98)


def zm_line(values: dict[int, str]) -> bytes:
    """One ZM record: numbers zero-filled on the left (as given), text padded with spaces on the right."""
    out = b""
    for i, width in enumerate(ZM_WIDTHS):
        value = values.get(i, "").encode("gbk")
        assert len(value) <= width, (i, value)
        out += value.ljust(width, b" ") + b" "
    return out.rstrip(b" ")


class FakeUnionPay(FakeGateway):
    """UnionPay's gateway (front-end form, back-end requests, query) as far as the adapter can tell."""

    def __init__(self, merchant_cert: x509.Certificate) -> None:
        self.merchants = {str(merchant_cert.serial_number): merchant_cert.public_key()}
        self.root_key, self.middle_key, self.key = new_key(), new_key(), new_key()
        self.root = certificate("CFCA TEST ROOT", self.root_key)
        self.middle = certificate("CFCA TEST OCA1", self.middle_key, self.root, self.root_key, ca=True)
        self.cert = certificate(UNIONPAY_CN, self.key, self.middle, self.middle_key)
        self.trades: dict[tuple[str, str], Trade] = {}
        self.paths: list[str] = []  # requests whose signature verified
        self.answer_cert: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None
        self.unlisted: set[str] = set()  # orderIds its daily file leaves out
        self.file_amounts: dict[str, int] = {}  # orderId -> the amount its daily file says instead
        self.tamper_file = False
        super().__init__(
            [
                Route("/", self.file_transfer, methods=["POST"]),
                Route("/gateway/api/frontTransReq.do", self.front, methods=["POST"]),
                Route("/gateway/api/backTransReq.do", self.back, methods=["POST"]),
                Route("/gateway/api/queryTrans.do", self.query, methods=["POST"]),
            ]
        )

    def signed(
        self, fields: dict[str, str], key: rsa.RSAPrivateKey | None = None, cert: x509.Certificate | None = None
    ) -> dict[str, str]:
        key, cert = (key, cert) if key and cert else self.answer_cert or (self.key, self.cert)
        out = {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "merId": MER_ID} | fields
        out["signPubKeyCert"] = cert_pem(cert)
        out["signature"] = sign(key, out)
        return out

    async def request(self, request: Request, path: str) -> dict[str, str] | None:
        await self.hold()
        fields = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        merchant = self.merchants.get(fields.get("certId", ""))
        if fields.get("merId") != MER_ID or merchant is None or not signed_by(merchant, fields):  # type: ignore[arg-type]
            return None
        assert fields["version"] == "5.1.0" and fields["signMethod"] == "01" and fields["encoding"] == "UTF-8"
        if path == "file":
            return fields
        assert 8 <= len(fields["orderId"]) <= 40 and fields["orderId"].isalnum(), fields["orderId"]
        datetime.strptime(fields["txnTime"], "%Y%m%d%H%M%S")
        self.paths.append(path)
        return fields

    def answer(self, fields: dict[str, str]) -> Response:
        return Response(urlencode(self.signed(fields)), media_type="text/plain;charset=UTF-8")

    async def front(self, request: Request) -> Response:
        """The browser posts the signed form here; the bank's pages take over (paid later by `pay`)."""
        fields = await self.request(request, "front")
        if fields is None:
            return HTMLResponse("<p>验签失败 (signature check failed)</p>", status_code=200)
        assert (fields["txnType"], fields["bizType"], fields["currencyCode"]) == ("01", "000201", "156")
        assert fields["backUrl"] == NOTIFY_URL and fields["frontUrl"].startswith("https://")
        key = (fields["orderId"], fields["txnTime"])
        trade = self.trades.setdefault(key, Trade(*key, int(fields["txnAmt"]), self.new_query_id()))
        assert trade.amount == int(fields["txnAmt"])
        return HTMLResponse(f"<p>UnionPay cashier: order {trade.order_id}, ¥{trade.amount / 100:.2f}</p>")

    async def back(self, request: Request) -> Response:
        fields = await self.request(request, "back")
        if fields is None:
            return self.answer({"respCode": "11", "respMsg": "验证签名失败"})
        assert fields["txnType"] == "04" and fields["backUrl"] == NOTIFY_URL
        [paid] = [t for t in self.trades.values() if t.query_id == fields["origQryId"]] or [None]
        common = {"txnType": "04", "orderId": fields["orderId"], "txnTime": fields["txnTime"]}
        if paid is None or not paid.paid:
            return self.answer(common | {"respCode": "35", "respMsg": "原交易不存在或状态不正确"})
        key = (fields["orderId"], fields["txnTime"])
        if key in paid.refunds:  # the same refund again: nothing moves
            return self.answer(common | {"respCode": "00", "respMsg": "成功[0000000]"})
        if any(order == key[0] for order, _ in paid.refunds):
            return self.answer(common | {"respCode": "12", "respMsg": "重复交易"})
        if int(fields["txnAmt"]) > paid.amount - sum(paid.refunds.values()):
            return self.answer(common | {"respCode": "30", "respMsg": "退货金额超限"})
        paid.refunds[key] = int(fields["txnAmt"])
        paid.refund_query_ids[key[0]] = self.new_query_id()
        return self.answer(common | {"respCode": "00", "respMsg": "成功[0000000]", "queryId": self.new_query_id()})

    async def file_transfer(self, request: Request) -> Response:
        """fileTransfer.do: the day's reconciliation zip (ZM and ZME files), deflated and base64-encoded."""
        fields = await self.request(request, "file")
        if fields is None:
            return self.answer({"respCode": "11", "respMsg": "验证签名失败"})
        assert (fields["txnType"], fields["txnSubType"], fields["bizType"], fields["fileType"]) == (
            "76",
            "01",
            "000000",
            "00",
        )
        assert "channelType" not in fields
        today = datetime.now(BEIJING).date()
        day = datetime.strptime(f"{today.year}{fields['settleDate']}", "%Y%m%d").date()
        common = {"txnType": "76", "txnSubType": "01", "bizType": "000000", "settleDate": fields["settleDate"]}
        if day > today:  # the day's file is not made yet
            return self.answer(common | {"respCode": "98", "respMsg": "文件不存在"})
        bundle = io.BytesIO()
        with zipfile.ZipFile(bundle, "w") as archive:
            archive.writestr(f"INN{day:%y%m%d}88ZM_{MER_ID}", b"\r\n".join(self.zm_records(day)) + b"\r\n")
            archive.writestr(f"INN{day:%y%m%d}88ZME_{MER_ID}", b"")
        content = base64.b64encode(zlib.compress(bundle.getvalue())).decode()
        answer = self.signed(
            common
            | {"respCode": "00", "respMsg": "成功", "fileName": f"{MER_ID}_{day:%Y%m%d}.zip", "fileContent": content}
        )
        if self.tamper_file:  # a file changed on the way: the answer's signature no longer covers it
            answer["fileContent"] = base64.b64encode(zlib.compress(b"PK not the day's file")).decode()
        return Response(urlencode(answer), media_type="text/plain;charset=UTF-8")

    def zm_records(self, day: date) -> list[bytes]:
        records: list[bytes] = []
        trace = 100000
        for trade in self.trades.values():
            if not trade.paid or trade.paid_at is None or trade.paid_at.date() != day:
                continue
            items = (
                [] if trade.order_id in self.unlisted else [("S22", trade.order_id, trade.amount, trade.query_id, "")]
            )
            items += [
                ("S30", order, amount, trade.refund_query_ids.get(order, ""), trade.query_id)
                for (order, _), amount in trade.refunds.items()
            ]
            for code, order, amount, query_id, original in items:
                trace += 1
                amount = self.file_amounts.get(order, amount)
                fee = amount * 5 // 1000  # 0.5 %: kept on a payment, given back on a refund
                records.append(
                    zm_line(
                        {
                            0: code,
                            1: "00049992900",
                            2: "00049992900",
                            3: f"{trace:06d}",
                            4: trade.paid_at.strftime("%m%d%H%M%S"),
                            5: "6216********0018",
                            6: f"{amount:012d}",
                            7: "7299",
                            8: "08",
                            9: query_id,
                            10: "",
                            11: order,
                            12: "01",
                            16: ("C" if code == "S22" else "D") + f"{amount - fee:012d}",
                            15: ("D" if code == "S22" else "C") + f"{fee:012d}",
                            17: "0001",
                            19: "01" if code == "S22" else "04",
                            20: "01" if code == "S22" else "00",
                            21: "000201",
                            22: "01",
                            25: "0",
                            26: original,
                            27: MER_ID,
                            32: ("C" if code == "S22" else "D") + f"{amount - fee:012d}",
                            33: "00000000",
                        }
                    )
                )
        # A line of another kind (a consume void, 消费撤销) that is none of ours to match: left out by the parser.
        records.append(zm_line({0: "S31", 6: f"{1:012d}", 9: "0" * 21, 11: "VOIDED00000000001", 15: "C" + "0" * 12}))
        return records

    async def query(self, request: Request) -> Response:
        fields = await self.request(request, "query")
        if fields is None:
            return self.answer({"respCode": "11", "respMsg": "验证签名失败"})
        key = (fields["orderId"], fields["txnTime"])
        common = {"txnType": "00", "orderId": key[0], "txnTime": key[1]}
        trade = self.trades.get(key)
        if trade is not None:
            found = {
                "origRespCode": "00" if trade.paid else "05",
                "txnAmt": str(trade.amount),
                "queryId": trade.query_id,
            }
            return self.answer(common | {"respCode": "00", "respMsg": "成功"} | found)
        for paid in self.trades.values():
            if key in paid.refunds:
                refunded = {"origRespCode": "00", "txnAmt": str(paid.refunds[key])}
                return self.answer(common | {"respCode": "00", "respMsg": "成功"} | refunded)
        return self.answer(common | {"respCode": "34", "respMsg": "查无此交易"})

    @staticmethod
    def new_query_id() -> str:
        return f"{datetime.now(BEIJING):%Y%m%d%H%M%S}{uuid.uuid4().int % 10**7:07d}"

    def pay(self, order: str, txn_time: str, amount: int) -> Trade:
        trade = self.trades.setdefault((order, txn_time), Trade(order, txn_time, amount, self.new_query_id()))
        trade.paid = True
        trade.paid_at = trade.paid_at or datetime.now(BEIJING)
        return trade

    def notification(
        self, trade: Trade, key: rsa.RSAPrivateKey | None = None, cert: x509.Certificate | None = None, **changes: str
    ) -> dict[str, str]:
        fields = {
            "accessType": "0",
            "bizType": "000201",
            "currencyCode": "156",
            "orderId": trade.order_id,
            "queryId": trade.query_id,
            "respCode": "00",
            "respMsg": "Success!",
            "settleAmt": str(trade.amount),
            "settleCurrencyCode": "156",
            "settleDate": f"{datetime.now(BEIJING):%m%d}",
            "traceNo": f"{uuid.uuid4().int % 10**6:06d}",
            "traceTime": f"{datetime.now(BEIJING):%m%d%H%M%S}",
            "txnAmt": str(trade.amount),
            "txnSubType": "01",
            "txnTime": trade.txn_time,
            "txnType": "01",
        } | changes
        return self.signed(fields, key, cert)

    @staticmethod
    async def deliver(client: httpx.AsyncClient, fields: dict[str, str]) -> httpx.Response:
        return await post_form(client, NOTIFY_URL, fields)


@pytest.fixture(scope="module")
def merchant() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = new_key()
    return key, certificate("merchant 777290058110048", key)


@pytest.fixture
async def unionpay(merchant: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> AsyncIterator[tuple[FakeUnionPay, str]]:
    fake = FakeUnionPay(merchant[1])
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
async def svc(
    service_factory: Callable[..., Any],
    unionpay: tuple[FakeUnionPay, str],
    merchant: tuple[rsa.RSAPrivateKey, x509.Certificate],
    tmp_path: Path,
) -> AsyncIterator[Any]:
    fake, url = unionpay
    key, cert = merchant
    (tmp_path / "sign.pem").write_bytes(private_pem(key))
    (tmp_path / "root.pem").write_text(cert_pem(fake.root))
    (tmp_path / "middle.pem").write_text(cert_pem(fake.middle))
    async with service_factory(
        payment_provider_bank_card="unionpay",
        payment_notify_base_url="http://test",
        payment_gateway_timeout_s=2.0,
        unionpay_mer_id=MER_ID,
        unionpay_sign_key_file=tmp_path / "sign.pem",
        unionpay_sign_cert_id=str(cert.serial_number),
        unionpay_root_cert_file=tmp_path / "root.pem",
        unionpay_middle_cert_file=tmp_path / "middle.pem",
        unionpay_gateway_url=url,
        unionpay_file_url=url,
        unionpay_front_url="https://app.example.com/paid",
    ) as service:
        yield service


async def placed(svc: Any, top_up_id: str) -> tuple[str, datetime]:
    [(created_at,)] = await sql(svc, "SELECT created_at FROM top_ups WHERE id = :id", id=uuid.UUID(top_up_id))
    return created_at.astimezone(BEIJING).strftime("%Y%m%d%H%M%S"), created_at


async def test_bank_card_top_up_paid_credits_once_and_is_withdrawn_by_refund(
    svc: Any, unionpay: tuple[FakeUnionPay, str]
) -> None:
    fake, _ = unionpay
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 4350, "bank_card")
    pay = await svc.client.post(f"/v1/wallet/top-ups/{top_up['top_up_id']}/pay", headers=svc.auth(user))
    assert pay.status_code == 200, pay.text
    form = pay.json()["pay_params"]
    assert fake.paths == []  # the front-end redirect opens nothing until the browser posts the form
    async with httpx.AsyncClient() as browser:
        cashier = await post_form(browser, form["form_action"], form["form_fields"])
    assert cashier.status_code == 200 and "¥43.50" in cashier.text, cashier.text
    txn_time, created_at = await placed(svc, top_up["top_up_id"])
    trade = fake.pay(order_id(top_up["top_up_id"]), txn_time, 4350)
    assert fake.trades.keys() == {(trade.order_id, txn_time)}  # the form carried our row's time as txnTime

    paid = fake.notification(trade)
    first = await fake.deliver(svc.client, paid)
    assert first.status_code == 200 and first.text == "ok"
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "succeeded"
    again = await asyncio.gather(*[fake.deliver(svc.client, paid) for _ in range(3)])  # UnionPay repeats
    assert [r.status_code for r in again] == [200] * 3
    assert await svc.balance(user) == 4350
    assert (await sql(svc, "SELECT provider_trade_no FROM top_ups"))[0][0] == trade.query_id

    provider = svc.provider("bank_card")
    queried = await provider.query_order(top_up["top_up_id"], created_at)
    assert (queried.state, queried.amount_fen, queried.trade_no) == (OrderState.SUCCESS, 4350, trade.query_id)
    assert (await provider.query_order(str(uuid.uuid4()), created_at)).state == OrderState.NOT_FOUND

    # Withdrawing the balance refunds the card's payment (退货, by the order's queryId), once.
    response = await svc.client.post(
        "/v1/wallet/withdrawals", json={"amount_fen": 1000}, headers={**svc.auth(user), "Idempotency-Key": "w1"}
    )
    assert response.status_code in (200, 201), response.text

    async def refunded() -> bool:
        return trade.refunds != {}

    await eventually(refunded, timeout=10, what="the refund at the gateway")
    [(part_id, part_created)] = await sql(svc, "SELECT id, created_at FROM withdrawal_parts")
    refund_no = f"wd_{part_id}"
    assert list(trade.refunds.values()) == [1000]
    await provider.refund(top_up["top_up_id"], refund_no, 1000, created_at, part_created)  # a retry: nothing more
    assert sum(trade.refunds.values()) == 1000
    done = await provider.query_refund(top_up["top_up_id"], refund_no, part_created)
    assert (done.state, done.amount_fen) == (RefundState.SUCCESS, 1000)
    with pytest.raises(PaymentProviderError, match="respCode 30"):  # more than is left
        await provider.refund(top_up["top_up_id"], f"wd_{uuid.uuid4()}", 3351, created_at, datetime.now(UTC))
    # UnionPay's notice of the refund's outcome is acknowledged and moves nothing.
    notice = fake.notification(trade, txnType="04", txnSubType="00", orderId=order_id(refund_no), txnAmt="1000")
    acknowledged = await fake.deliver(svc.client, notice)
    assert (acknowledged.status_code, acknowledged.text) == (200, "ok")
    assert await svc.balance(user) == 3350


async def test_forged_and_mismatched_notifications_change_nothing(svc: Any, unionpay: tuple[FakeUnionPay, str]) -> None:
    fake, _ = unionpay
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 2000, "bank_card")
    txn_time, _ = await placed(svc, top_up["top_up_id"])
    trade = fake.pay(order_id(top_up["top_up_id"]), txn_time, 2000)
    genuine = fake.notification(trade)
    impostor = new_key()
    self_made = certificate(UNIONPAY_CN, impostor)  # the right name, but no chain to the root
    other_middle_key = new_key()
    other_middle = certificate("CFCA TEST OCA1", other_middle_key)
    refused = {
        "self-signed certificate with UnionPay's name": fake.notification(trade, impostor, self_made),
        "issued by another middle certificate": fake.notification(
            trade, impostor, certificate(UNIONPAY_CN, impostor, other_middle, other_middle_key)
        ),
        "UnionPay's chain but another subject": fake.notification(
            trade, impostor, certificate("CFCA@someone else@00040000:SIGN", impostor, fake.middle, fake.middle_key)
        ),
        "amount changed after signing": genuine | {"txnAmt": "200000"},
        "no signature": {k: v for k, v in genuine.items() if k != "signature"},
        "for another merchant": fake.notification(trade, merId="777290058119999"),
        "genuine but another amount": fake.notification(trade, txnAmt="1999"),
        "genuine but not paid": fake.notification(trade, respCode="03"),
    }
    for what, fields in refused.items():
        response = await fake.deliver(svc.client, fields)
        assert response.status_code == 400, what
        assert response.json()["code"] in {"invalid_signature", "invalid_notification", "amount_mismatch"}, what
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "pending"
    assert await svc.balance(user) == 0
    assert (await fake.deliver(svc.client, genuine)).status_code == 200
    assert await svc.balance(user) == 2000


async def test_answers_must_be_signed_by_unionpay_and_a_stalled_gateway_times_out(
    svc: Any, unionpay: tuple[FakeUnionPay, str]
) -> None:
    fake, _ = unionpay
    provider = svc.provider("bank_card")
    placed_at = datetime.now(UTC)
    number = str(uuid.uuid4())
    trade = fake.pay(order_id(number), placed_at.astimezone(BEIJING).strftime("%Y%m%d%H%M%S"), 100)
    assert (await provider.query_order(number, placed_at)).state == OrderState.SUCCESS

    impostor = new_key()
    fake.answer_cert = (impostor, certificate(UNIONPAY_CN, impostor))
    with pytest.raises(PaymentProviderError, match="signature"):
        await provider.query_order(number, placed_at)
    with pytest.raises(PaymentProviderError, match="signature"):
        await provider.query_order(str(uuid.uuid4()), placed_at)  # a "no such order" is not believed unsigned
    fake.answer_cert = None

    refund_no, refund_at = f"wd_{uuid.uuid4()}", datetime.now(UTC)
    await fake.times_out(provider.refund(number, refund_no, 100, placed_at, refund_at))
    await provider.refund(number, refund_no, 100, placed_at, refund_at)  # the caller's retry, same refund
    assert list(trade.refunds.values()) == [100]
    with pytest.raises(PaymentProviderError, match="needs the time"):
        await provider.query_order(number)


async def test_a_fee_the_wallet_does_not_cover_is_a_debt_paid_by_card(
    svc: Any, unionpay: tuple[FakeUnionPay, str]
) -> None:
    fake, _ = unionpay
    await fee_becomes_a_debt_paid_in_the_app(
        svc,
        "bank_card",
        pay=lambda number, placed, fen: fake.pay(
            order_id(number), placed.astimezone(BEIJING).strftime("%Y%m%d%H%M%S"), fen
        ),
        notify=lambda trade: fake.deliver(svc.client, fake.notification(trade)),
    )
    assert "query" in fake.paths


def test_settings_choose_the_bank_card_provider(settings_factory: Callable[..., Any], tmp_path: Path) -> None:
    from pydantic import ValidationError

    assert settings_factory().provider_for("bank_card") == "sandbox"
    real = {
        "payment_provider": "none",
        "payment_provider_bank_card": "unionpay",
        "payment_notify_base_url": "https://pay.example.com",
        "unionpay_mer_id": MER_ID,
        "unionpay_sign_key_file": tmp_path / "sign.pem",
        "unionpay_sign_cert_id": "1",
        "unionpay_root_cert_file": tmp_path / "root.pem",
        "unionpay_middle_cert_file": tmp_path / "middle.pem",
        "unionpay_front_url": "https://app.example.com/paid",
    }
    assert settings_factory(**real).provider_for("bank_card") == "unionpay"
    for refused, reason in (
        ({"pb_env": "production", "payment_provider": "none", "payment_provider_bank_card": "sandbox"}, "bank_card"),
        (real | {"unionpay_middle_cert_file": None}, "UNIONPAY_MIDDLE_CERT_FILE"),
        (real | {"payment_notify_base_url": None}, "PAYMENT_NOTIFY_BASE_URL"),
    ):
        with pytest.raises(ValidationError, match=reason):
            settings_factory(**refused)


async def test_top_up_by_bank_card_in_the_sandbox(service_factory: Callable[..., Any]) -> None:
    """Development and tests: the bank-card channel takes the sandbox like the others (no longer a 422)."""
    async with service_factory() as dev:
        user = uuid.uuid4()
        top_up = await dev.top_up(user, 500, "bank_card")
        assert (await dev.wait_top_up(user, top_up["top_up_id"]))["status"] == "succeeded"
        assert await dev.balance(user) == 500


async def test_a_deposit_is_paid_by_bank_card_through_the_form(svc: Any, unionpay: tuple[FakeUnionPay, str]) -> None:
    fake, _ = unionpay
    user = uuid.uuid4()
    response = await svc.client.post(
        "/v1/deposit/payments", json={"channel": "bank_card"}, headers={**svc.auth(user), "Idempotency-Key": "d1"}
    )
    assert response.status_code == 201, response.text
    payment_id = response.json()["operation_id"]
    pay = await svc.client.post(f"/v1/deposit/payments/{payment_id}/pay", headers=svc.auth(user))
    assert pay.status_code == 200, pay.text
    form = pay.json()["pay_params"]
    async with httpx.AsyncClient() as browser:
        cashier = await post_form(browser, form["form_action"], form["form_fields"])
    assert "¥99.00" in cashier.text, cashier.text
    [((order, txn_time), trade)] = fake.trades.items()
    assert order == order_id(f"dep_{payment_id}")
    fake.pay(order, txn_time, 9900)
    assert (await fake.deliver(svc.client, fake.notification(trade))).status_code == 200
    assert (await svc.client.get("/v1/deposit", headers=svc.auth(user))).json()["held_fen"] == 9900
    again = await svc.client.post(f"/v1/deposit/payments/{payment_id}/pay", headers=svc.auth(user))
    assert again.json()["code"] == "deposit_not_pending"
    other = await svc.client.post(f"/v1/deposit/payments/{payment_id}/pay", headers=svc.auth(uuid.uuid4()))
    assert other.json()["code"] == "deposit_order_not_found"


async def test_the_daily_file_is_reconciled_with_our_records(svc: Any, unionpay: tuple[FakeUnionPay, str]) -> None:
    """UnionPay's reconciliation file from the fake (fileTransfer.do: a signed answer carrying the day's zip,
    deflated and base64-encoded, whose fixed-width GBK ZM file lists payments and refunds): each kind of mismatch
    found once, however often run; a debt paid by card agrees; a file that does not match its signature is
    refused and the last good result stays."""
    from asset_credit_svc.statements import service as statements

    fake, _ = unionpay
    user = uuid.uuid4()

    async def paid(amount_fen: int, notified: bool = True) -> tuple[str, Trade]:
        top_up = await svc.top_up(user, amount_fen, "bank_card")
        txn_time, _ = await placed(svc, top_up["top_up_id"])
        trade = fake.pay(order_id(top_up["top_up_id"]), txn_time, amount_fen)
        if notified:
            assert (await fake.deliver(svc.client, fake.notification(trade))).status_code == 200
        return str(top_up["top_up_id"]), trade

    agreed, _ = await paid(4350)
    not_credited, _ = await paid(2000, notified=False)  # the notification never came: ours stays pending
    differs, differing = await paid(1000)
    fake.file_amounts[differing.order_id] = 1001  # the channel's file says otherwise
    unlisted, gone = await paid(500)
    fake.unlisted.add(gone.order_id)  # credited by us, absent from the channel's file
    _, agreed_at = await placed(svc, agreed)
    stray_refund = f"wd_{uuid.uuid4()}"  # a refund the channel made that we never recorded
    await svc.provider("bank_card").refund(agreed, stray_refund, 100, agreed_at, datetime.now(UTC))

    # A rental fee the wallet did not cover, paid as a debt by card: on both sides, the same amount.
    owed = ChargeRequested(charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=uuid.uuid4(), amount_fen=300)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        assert await charges.settle(session, svc.runtime, owed, uuid.uuid4()) == "failed"
    made = await svc.client.post(
        f"/v1/wallet/debts/{owed.rental_id}/payments",
        json={"channel": "bank_card"},
        headers={**svc.auth(owed.user_id), "Idempotency-Key": "card-debt"},
    )
    assert made.status_code == 201, made.text
    payment_id = made.json()["payment_id"]
    [(debt_placed,)] = await sql(svc, "SELECT created_at FROM debt_payments WHERE id = :id", id=uuid.UUID(payment_id))
    debt_trade = fake.pay(order_id(f"debt_{payment_id}"), debt_placed.astimezone(BEIJING).strftime("%Y%m%d%H%M%S"), 300)
    assert (await fake.deliver(svc.client, fake.notification(debt_trade))).status_code == 200
    paid_debt = await svc.client.get(f"/v1/wallet/debt-payments/{payment_id}", headers=svc.auth(owed.user_id))
    assert paid_debt.json()["settled_charge_id"] == str(owed.charge_id)

    today = datetime.now(BEIJING).date()
    path = f"/v1/admin/reconciliation/bank_card/statements/{today}"
    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}
    first = await svc.client.post(path, headers=finance)
    assert first.status_code == 200, first.text
    report = first.json()
    assert {(m["kind"], m["number"], m["problem"]) for m in report["mismatches"]} == {
        ("payment", not_credited, "missing_on_our_side"),
        ("payment", differs, "amount_differs"),
        ("payment", unlisted, "missing_on_their_side"),
        ("refund", stray_refund, "missing_on_our_side"),
    }
    by_number = {m["number"]: m for m in report["mismatches"]}
    assert (by_number[not_credited]["our_status"], by_number[not_credited]["their_amount_fen"]) == ("pending", 2000)
    assert (by_number[differs]["our_amount_fen"], by_number[differs]["their_amount_fen"]) == (1000, 1001)
    # Five lines: four payments and the refund (the gone payment left out, the consume void not ours).
    assert (report["lines"], report["statement_payments_fen"], report["statement_refunds_fen"]) == (5, 7651, 100)
    assert report["our_payments_fen"] == 4350 + 1000 + 500 + 300 and report["our_refunds_fen"] == 0
    fees = sum(amount * 5 // 1000 for amount in (4350, 2000, 1001, 300)) - 100 * 5 // 1000
    assert report["statement_fees_fen"] == fees

    # Again by hand, then by the daily job: the same result, stored once.
    again = await svc.client.post(path, headers=finance)
    assert again.json()["mismatches"] == report["mismatches"]
    done = await statements.reconcile_recent_days(
        svc.runtime, svc.runtime.extras["payment_providers"], days=1, today=today + timedelta(days=1)
    )
    assert done == 1
    assert (await sql(svc, "SELECT count(*) FROM statement_mismatches"))[0][0] == 4

    # A file that does not match the answer's signature is refused; the last good result stays.
    fake.tamper_file = True
    refused = await svc.client.post(path, headers=finance)
    assert (refused.status_code, refused.json()["code"]) == (503, "provider_unavailable")
    fake.tamper_file = False
    stored = await svc.client.get(path, headers=finance)
    assert stored.status_code == 200 and stored.json()["mismatches"] == report["mismatches"]

    # The channel fixes its file: the next run clears that mismatch.
    fake.unlisted.clear()
    cleared = (await svc.client.post(path, headers=finance)).json()
    assert unlisted not in {m["number"] for m in cleared["mismatches"]} and len(cleared["mismatches"]) == 3

    tomorrow = f"/v1/admin/reconciliation/bank_card/statements/{today + timedelta(days=1)}"
    assert (await svc.client.post(tomorrow, headers=finance)).json()["code"] == "statement_not_ready"
