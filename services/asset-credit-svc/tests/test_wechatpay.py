"""Integration: the WeChat Pay v3 adapter against a fake WeChat Pay gateway on a real port, with keys and
certificates made for the test. The fake checks each request's Authorization (the merchant's signature
and certificate serial), signs its answers with its platform certificate, hands out that certificate
sealed with the APIv3 key, encrypts and signs notifications (AEAD_AES_256_GCM), sends duplicate, late,
replayed and forged ones, and can stall past the adapter's timeout (real PG, the real payment flows)."""

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.order_numbers import to_wire
from asset_credit_svc.payments.providers import OrderState, PaymentOrder, PaymentProviderError, RefundState
from kit.db import unit_of_work
from kit.testing import eventually

from .gateway_kit import (
    BEIJING,
    FakeGateway,
    certificate,
    fee_becomes_a_debt_paid_in_the_app,
    new_key,
    private_pem,
    sha256_rsa,
    sha256_rsa_ok,
    sql,
    top_up_status,
)

pytestmark = pytest.mark.integration

MCHID, APPID = "1900000109", "wxd678efh567hg6787"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3_KEY = "0123456789abcdef0123456789ABCDEF"
NOTIFY_URL = "http://test/v1/payments/wechat/notify"
TRADE_NO = re.compile(r"^[0-9A-Za-z_\-*]{6,32}$")  # WeChat Pay's out_trade_no
REFUND_NO = re.compile(r"^[0-9A-Za-z_\-*|@]{1,64}$")
AUTH = re.compile(r"^WECHATPAY2-SHA256-RSA2048 (?P<fields>.+)$")


def seal(plaintext: bytes, associated_data: str, key: str = APIV3_KEY) -> dict[str, str]:
    nonce = secrets.token_hex(6)
    sealed = AESGCM(key.encode()).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return {
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(sealed).decode(),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass
class Order:
    out_trade_no: str
    total: int
    prepay_id: str
    payer: str | None
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: str | None = None
    refunds: dict[str, int] = field(default_factory=dict)
    refunded_at: dict[str, str] = field(default_factory=dict)


class FakeWechatPay(FakeGateway):
    """WeChat Pay's v3 API as far as the adapter can tell."""

    def __init__(self, merchant_public_key: rsa.RSAPublicKey) -> None:
        self.merchant_public_key = merchant_public_key
        self.platform_key = new_key()
        self.platform_cert = certificate("Tenpay.com Root CA test", self.platform_key, days=30)
        self.serial = f"{self.platform_cert.serial_number:X}"
        self.orders: dict[str, Order] = {}
        self.calls: list[str] = []  # "METHOD path" of the requests whose signature verified
        self.sign_answers_with: rsa.RSAPrivateKey | None = None
        super().__init__(
            [
                Route("/v3/certificates", self.certificates, methods=["GET"]),
                Route("/v3/pay/transactions/{kind}", self.prepay, methods=["POST"]),
                Route("/v3/pay/transactions/out-trade-no/{out_trade_no}", self.query, methods=["GET"]),
                Route("/v3/pay/transactions/out-trade-no/{out_trade_no}/close", self.close, methods=["POST"]),
                Route("/v3/refund/domestic/refunds", self.refund, methods=["POST"]),
                Route("/v3/refund/domestic/refunds/{out_refund_no}", self.refund_query, methods=["GET"]),
                Route("/v3/bill/tradebill", self.trade_bill, methods=["GET"]),
                Route("/v3/billdownload/file", self.bill_download, methods=["GET"]),
            ]
        )
        self.bills: dict[str, bytes] = {}  # by download token
        self.corrupt_bills = False  # the file differs from the hash in the signed answer

    # -- signing both ways -------------------------------------------------------------------------

    def signed_headers(self, body: bytes, key: rsa.RSAPrivateKey | None = None, **override: str) -> dict[str, str]:
        timestamp, nonce = override.pop("timestamp", str(int(time.time()))), secrets.token_hex(16)
        signature = sha256_rsa(key or self.platform_key, f"{timestamp}\n{nonce}\n{body.decode()}\n")
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": self.serial,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Content-Type": "application/json",
        } | override

    def answer(self, status: int, content: dict[str, Any]) -> Response:
        body = json.dumps(content, ensure_ascii=False).encode()
        return Response(body, status_code=status, headers=self.signed_headers(body, self.sign_answers_with))

    async def authorized(self, request: Request) -> bytes | None:
        await self.hold()
        body = await request.body()
        match = AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return None
        fields = dict(re.findall(r'(\w+)="([^"]*)"', match["fields"]))
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = f"{request.method}\n{path}\n{fields.get('timestamp')}\n{fields.get('nonce_str')}\n{body.decode()}\n"
        if (
            fields.get("mchid") != MCHID
            or fields.get("serial_no") != MERCHANT_SERIAL
            or abs(time.time() - int(fields.get("timestamp", "0"))) > 300
            or not sha256_rsa_ok(self.merchant_public_key, message, fields.get("signature", ""))
        ):
            return None
        self.calls.append(f"{request.method} {request.url.path}")
        return body

    def refused(self) -> Response:
        return self.answer(401, {"code": "SIGN_ERROR", "message": "签名错误"})

    # -- the API -----------------------------------------------------------------------------------

    async def certificates(self, request: Request) -> Response:
        if await self.authorized(request) is None:
            return self.refused()
        sealed = seal(self.platform_cert.public_bytes(serialization.Encoding.PEM), "certificate")
        item = {
            "serial_no": self.serial,
            "effective_time": self.platform_cert.not_valid_before_utc.isoformat(),
            "expire_time": self.platform_cert.not_valid_after_utc.isoformat(),
            "encrypt_certificate": sealed,
        }
        return self.answer(200, {"data": [item]})

    async def prepay(self, request: Request) -> Response:
        body = await self.authorized(request)
        if body is None:
            return self.refused()
        payload = json.loads(body)
        kind = request.path_params["kind"]
        if payload["mchid"] != MCHID or payload["appid"] != APPID or payload["notify_url"] != NOTIFY_URL:
            return self.answer(400, {"code": "PARAM_ERROR", "message": "参数错误"})
        if not TRADE_NO.match(payload["out_trade_no"]):
            return self.answer(400, {"code": "PARAM_ERROR", "message": "out_trade_no"})
        payer = payload.get("payer", {}).get("openid")
        if (kind == "jsapi") != (payer is not None):
            return self.answer(400, {"code": "PARAM_ERROR", "message": "payer"})
        order = self.orders.get(payload["out_trade_no"])
        if order is not None:
            if order.total != payload["amount"]["total"]:
                return self.answer(400, {"code": "INVALID_REQUEST", "message": "订单号重复"})
            if order.state == "SUCCESS":
                return self.answer(400, {"code": "ORDERPAID", "message": "订单已支付"})
        else:
            order = Order(payload["out_trade_no"], payload["amount"]["total"], f"wx{uuid.uuid4().hex}", payer)
            self.orders[order.out_trade_no] = order
        return self.answer(200, {"prepay_id": order.prepay_id})

    async def query(self, request: Request) -> Response:
        if await self.authorized(request) is None:
            return self.refused()
        order = self.orders.get(request.path_params["out_trade_no"])
        if order is None or request.query_params.get("mchid") != MCHID:
            return self.answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        return self.answer(200, self.transaction(order))

    async def close(self, request: Request) -> Response:
        body = await self.authorized(request)
        if body is None:
            return self.refused()
        if json.loads(body).get("mchid") != MCHID:
            return self.answer(400, {"code": "PARAM_ERROR", "message": "mchid"})
        order = self.orders.get(request.path_params["out_trade_no"])
        if order is None:
            return self.answer(404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
        if order.state == "SUCCESS":
            return self.answer(400, {"code": "ORDERPAID", "message": "订单已支付"})
        order.state = "CLOSED"
        return Response(b"", status_code=204, headers=self.signed_headers(b"", self.sign_answers_with))

    async def refund(self, request: Request) -> Response:
        body = await self.authorized(request)
        if body is None:
            return self.refused()
        payload = json.loads(body)
        order = self.orders.get(payload["out_trade_no"])
        if order is None or order.state not in ("SUCCESS", "REFUND") or payload["amount"]["total"] != order.total:
            return self.answer(400, {"code": "INVALID_REQUEST", "message": "订单状态或金额不符"})
        number, amount = payload["out_refund_no"], payload["amount"]["refund"]
        if not REFUND_NO.match(number):
            return self.answer(400, {"code": "PARAM_ERROR", "message": "out_refund_no"})
        if number not in order.refunds:
            if amount > order.total - sum(order.refunds.values()):
                return self.answer(403, {"code": "NOT_ENOUGH", "message": "可退金额不足"})
            order.refunds[number] = amount
            order.refunded_at[number] = datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
            order.state = "REFUND"
        return self.answer(200, self.refund_of(order, number))

    async def refund_query(self, request: Request) -> Response:
        if await self.authorized(request) is None:
            return self.refused()
        number = request.path_params["out_refund_no"]
        for order in self.orders.values():
            if number in order.refunds:
                return self.answer(200, self.refund_of(order, number))
        return self.answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"})

    @staticmethod
    def refund_of(order: Order, number: str) -> dict[str, Any]:
        amount = {"refund": order.refunds[number], "total": order.total, "currency": "CNY"}
        return {"out_refund_no": number, "out_trade_no": order.out_trade_no, "status": "SUCCESS", "amount": amount}

    # -- the daily bill ----------------------------------------------------------------------------

    async def trade_bill(self, request: Request) -> Response:
        if await self.authorized(request) is None:
            return self.refused()
        day = date.fromisoformat(request.query_params["bill_date"])
        if request.query_params.get("bill_type") != "ALL" or day >= datetime.now(BEIJING).date() + timedelta(days=1):
            return self.answer(400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"})
        content, token = self.bill(day), uuid.uuid4().hex
        self.bills[token] = content + (b" " if self.corrupt_bills else b"")
        url = f"{request.base_url}v3/billdownload/file?token={token}"
        return self.answer(
            200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(content).hexdigest(), "download_url": url}
        )

    async def bill_download(self, request: Request) -> Response:
        if await self.authorized(request) is None:
            return self.refused()
        content = self.bills.get(request.query_params.get("token", ""))
        if content is None:
            return self.answer(404, {"code": "RESOURCE_NOT_EXISTS", "message": "账单不存在"})
        return Response(content, media_type="text/plain")  # unsigned: the answer's hash vouches for it

    def bill(self, day: date) -> bytes:
        """The ALL trade bill as WeChat Pay writes it: every value behind a backtick, fees to 5 decimals."""
        header = (
            "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
            "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
            "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
        )
        rows, paid, refunded, fees = [], 0, 0, 0.0
        for order in self.orders.values():
            if order.state in ("SUCCESS", "REFUND") and order.success_time and order.success_time.startswith(str(day)):
                fee = order.total * 0.006 / 100
                paid, fees = paid + order.total, fees + fee
                at = order.success_time.replace("T", " ")[:19]
                rows.append(
                    [
                        at,
                        APPID,
                        MCHID,
                        "0",
                        "",
                        order.transaction_id or "",
                        order.out_trade_no,
                        "oUser",
                        "APP",
                        "SUCCESS",
                        "OTHERS",
                        "CNY",
                        yuan(order.total),
                        "0.00",
                        "0",
                        "0",
                        "0.00",
                        "0.00",
                        "",
                        "",
                        "Wallet top-up",
                        "",
                        f"{fee:.5f}",
                        "0.60%",
                        yuan(order.total),
                        "0.00",
                        "",
                    ]
                )
            for number, amount in order.refunds.items():
                if order.refunded_at[number].startswith(str(day)):
                    refunded += amount
                    rows.append(
                        [
                            order.refunded_at[number],
                            APPID,
                            MCHID,
                            "0",
                            "",
                            order.transaction_id or "",
                            order.out_trade_no,
                            "oUser",
                            "APP",
                            "REFUND",
                            "OTHERS",
                            "CNY",
                            "0.00",
                            "0.00",
                            f"50300{uuid.uuid4().int % 10**20}",
                            number,
                            yuan(amount),
                            "0.00",
                            "ORIGINAL",
                            "SUCCESS",
                            "Wallet top-up",
                            "",
                            "-0.00000",
                            "0.60%",
                            "0.00",
                            yuan(amount),
                            "",
                        ]
                    )
        lines = [header, *(",".join(f"`{v}" for v in row) for row in rows)]
        lines.append("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额")
        totals = [str(len(rows)), yuan(paid), yuan(refunded), "0.00", f"{fees:.5f}", yuan(paid), yuan(refunded)]
        lines.append(",".join(f"`{v}" for v in totals))
        return ("\r\n".join(lines) + "\r\n").encode()

    # -- the payer and the notifications -----------------------------------------------------------

    def pay_app(self, params: dict[str, str]) -> Order:
        """What the WeChat app does with the SDK's parameters: checks the merchant's signature first."""
        message = f"{params['appid']}\n{params['timestamp']}\n{params['noncestr']}\n{params['prepayid']}\n"
        assert sha256_rsa_ok(self.merchant_public_key, message, params["sign"]), "bad app pay signature"
        assert params["partnerid"] == MCHID and params["package"] == "Sign=WXPay"
        [order] = [o for o in self.orders.values() if o.prepay_id == params["prepayid"]]
        return self.pay(order.out_trade_no)

    def pay(self, out_trade_no: str, total: int | None = None) -> Order:
        if total is not None:  # paid through a prepay we did not see
            self.orders.setdefault(out_trade_no, Order(out_trade_no, total, f"wx{uuid.uuid4().hex}", None))
        order = self.orders[out_trade_no]
        order.state, order.transaction_id = "SUCCESS", f"42000{uuid.uuid4().int % 10**23}"
        order.success_time = datetime.now(BEIJING).isoformat(timespec="seconds")
        return order

    def transaction(self, order: Order, **changes: Any) -> dict[str, Any]:
        found: dict[str, Any] = {
            "appid": APPID,
            "mchid": MCHID,
            "out_trade_no": order.out_trade_no,
            "trade_type": "JSAPI" if order.payer else "APP",
            "trade_state": order.state,
            "trade_state_desc": "支付成功" if order.state == "SUCCESS" else "未支付",
            "amount": {"total": order.total, "payer_total": order.total, "currency": "CNY", "payer_currency": "CNY"},
        }
        if order.transaction_id:
            found |= {"transaction_id": order.transaction_id, "success_time": order.success_time}
        return found | changes

    def notification(
        self,
        order: Order,
        *,
        key: rsa.RSAPrivateKey | None = None,
        apiv3_key: str = APIV3_KEY,
        event_type: str = "TRANSACTION.SUCCESS",
        headers: dict[str, str] | None = None,
        **changes: Any,
    ) -> tuple[bytes, dict[str, str]]:
        plaintext = json.dumps(self.transaction(order, **changes), ensure_ascii=False).encode()
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": seal(plaintext, "transaction", apiv3_key) | {"original_type": "transaction"},
        }
        body = json.dumps(envelope, ensure_ascii=False).encode()
        return body, self.signed_headers(body, key, **(headers or {}))

    @staticmethod
    async def deliver(client: httpx.AsyncClient, notice: tuple[bytes, dict[str, str]]) -> httpx.Response:
        return await client.post(NOTIFY_URL, content=notice[0], headers=notice[1])


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
async def wechat(merchant_key: rsa.RSAPrivateKey) -> AsyncIterator[tuple[FakeWechatPay, str]]:
    fake = FakeWechatPay(merchant_key.public_key())
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
def wechat_settings(
    wechat: tuple[FakeWechatPay, str], merchant_key: rsa.RSAPrivateKey, tmp_path: Path
) -> dict[str, Any]:
    _, url = wechat
    (tmp_path / "merchant.pem").write_bytes(private_pem(merchant_key))
    return {
        "payment_provider_wechat": "wechatpay",
        "payment_notify_base_url": "http://test",
        "payment_gateway_timeout_s": 2.0,
        "wechatpay_mchid": MCHID,
        "wechatpay_appid": APPID,
        "wechatpay_api_url": url,
        "wechatpay_merchant_key_file": tmp_path / "merchant.pem",
        "wechatpay_merchant_serial_no": MERCHANT_SERIAL,
        "wechatpay_apiv3_key": APIV3_KEY,
    }


@pytest.fixture
async def svc(service_factory: Callable[..., Any], wechat_settings: dict[str, Any]) -> AsyncIterator[Any]:
    # No platform certificate file: the service fetches it from the gateway at start.
    async with service_factory(**wechat_settings) as service:
        yield service


async def test_top_up_paid_through_wechat_pay_credits_once(svc: Any, wechat: tuple[FakeWechatPay, str]) -> None:
    fake, _ = wechat
    assert fake.calls[0] == "GET /v3/certificates"  # fetched at start, sealed with the APIv3 key
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 2500, "wechat")
    path = f"/v1/wallet/top-ups/{top_up['top_up_id']}/pay"
    first, again = [await svc.client.post(path, headers=svc.auth(user)) for _ in range(2)]
    assert first.status_code == 200, first.text
    assert first.json()["pay_params"]["prepayid"] == again.json()["pay_params"]["prepayid"]
    order = fake.pay_app(first.json()["pay_params"])

    notice = fake.notification(order)
    answers = await asyncio.gather(*[fake.deliver(svc.client, notice) for _ in range(3)])
    assert [a.status_code for a in answers] == [200] * 3 and answers[0].json()["code"] == "SUCCESS"
    late = await fake.deliver(svc.client, fake.notification(order))  # WeChat Pay repeats, signed anew
    assert late.status_code == 200
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "succeeded"
    assert await svc.balance(user) == 2500
    assert (await sql(svc, "SELECT provider_trade_no FROM top_ups"))[0][0] == order.transaction_id

    provider = svc.provider("wechat")
    queried = await provider.query_order(top_up["top_up_id"])
    assert (queried.state, queried.amount_fen, queried.trade_no) == (OrderState.SUCCESS, 2500, order.transaction_id)
    assert queried.paid_at is not None and queried.paid_at.utcoffset() == timedelta(hours=8)
    assert (await provider.query_order(str(uuid.uuid4()))).state == OrderState.NOT_FOUND

    refund_no = f"wd_{uuid.uuid4()}"  # a withdrawal's number: its UUID travels in base32
    assert (await provider.query_refund(top_up["top_up_id"], refund_no)).state == RefundState.NOT_FOUND
    await provider.refund(top_up["top_up_id"], refund_no, 1000)
    await provider.refund(top_up["top_up_id"], refund_no, 1000)  # a retry refunds nothing more
    assert order.refunds == {to_wire(refund_no): 1000}
    done = await provider.query_refund(top_up["top_up_id"], refund_no)
    assert (done.state, done.amount_fen) == (RefundState.SUCCESS, 1000)
    with pytest.raises(PaymentProviderError):
        await provider.refund(top_up["top_up_id"], f"wd_{uuid.uuid4()}", 1501)  # more than is left
    assert (await provider.query_order(top_up["top_up_id"])).state == OrderState.SUCCESS  # REFUND: still paid


async def test_forged_replayed_and_mismatched_notifications_change_nothing(
    svc: Any, wechat: tuple[FakeWechatPay, str]
) -> None:
    fake, _ = wechat
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 3000, "wechat")
    order = fake.pay(to_wire(top_up["top_up_id"]), 3000)
    body, headers = fake.notification(order)
    refused = {
        "signed by someone else": fake.notification(order, key=new_key()),
        "body changed after signing": (body.replace(b'"summary"', b'"Summary"'), headers),
        "unknown certificate serial": (body, headers | {"Wechatpay-Serial": "ABCDEF"}),
        "no signature": (body, {k: v for k, v in headers.items() if k != "Wechatpay-Signature"}),
        "another signature type": (body, headers | {"Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}),
        "replayed: signed ten minutes ago": fake.notification(
            order, headers={"timestamp": str(int(time.time()) - 600)}
        ),
        "sealed with another APIv3 key": fake.notification(order, apiv3_key="f" * 32),
        "for another merchant": fake.notification(order, mchid="1900000999"),
        "for another app": fake.notification(order, appid="wx0000000000000000"),
        "not a payment": fake.notification(order, event_type="REFUND.SUCCESS"),
        "not paid": fake.notification(order, trade_state="CLOSED"),
        "genuine but another amount": fake.notification(order, amount={"total": 2999, "currency": "CNY"}),
    }
    for what, notice in refused.items():
        response = await fake.deliver(svc.client, notice)
        assert response.status_code == 400, what
        assert response.json()["code"] in {"invalid_signature", "invalid_notification", "amount_mismatch"}, what
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "pending"
    assert await svc.balance(user) == 0
    assert (await fake.deliver(svc.client, (body, headers))).status_code == 200
    assert await svc.balance(user) == 3000


async def test_answers_must_be_signed_jsapi_needs_a_payer_and_a_stalled_gateway_times_out(
    service_factory: Callable[..., Any],
    wechat: tuple[FakeWechatPay, str],
    wechat_settings: dict[str, Any],
    merchant_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    fake, _ = wechat
    (tmp_path / "platform.pem").write_bytes(fake.platform_cert.public_bytes(serialization.Encoding.PEM))
    settings = wechat_settings | {
        "wechatpay_trade_type": "jsapi",
        "wechatpay_platform_cert_files": [tmp_path / "platform.pem"],
    }
    async with service_factory(**settings) as svc:
        assert fake.calls == []  # the platform certificate came from its file
        provider = svc.provider("wechat")
        with pytest.raises(PaymentProviderError, match="openid"):
            await provider.create_order(PaymentOrder("order_1", 100, "Wallet top-up"))
        created = await provider.create_order(
            PaymentOrder("order_1", 100, "Wallet top-up", payer="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
        )
        params = created.pay_params
        assert params["package"] == f"prepay_id={fake.orders['order_1'].prepay_id}" and params["signType"] == "RSA"
        message = f"{APPID}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
        assert sha256_rsa_ok(merchant_key.public_key(), message, params["paySign"])
        assert (await provider.query_order("order_1")).state == OrderState.PENDING

        fake.sign_answers_with = new_key()  # a man in the middle, or a certificate we were not given
        with pytest.raises(PaymentProviderError, match="signature"):
            await provider.query_order("order_1")
        with pytest.raises(PaymentProviderError, match="signature"):
            await provider.query_order("unknown")  # a "not found" is not believed unsigned either
        fake.sign_answers_with = None

        fake.pay("order_1")
        await fake.times_out(provider.refund("order_1", "r_1", 100))
        await provider.refund("order_1", "r_1", 100)  # the caller's retry, same refund number
        assert fake.orders["order_1"].refunds == {"r_1": 100}


async def test_a_fee_the_wallet_does_not_cover_is_a_debt_paid_through_wechat_pay(
    svc: Any, wechat: tuple[FakeWechatPay, str]
) -> None:
    fake, _ = wechat
    await fee_becomes_a_debt_paid_in_the_app(
        svc,
        "wechat",
        pay=lambda number, _placed, fen: fake.pay(to_wire(number), fen),
        notify=lambda order: fake.deliver(svc.client, fake.notification(order)),
    )
    assert any(call.endswith("/close") for call in fake.calls)  # the expired order was closed there


def test_settings_refuse_an_incomplete_wechat_pay(
    settings_factory: Callable[..., Any], wechat_settings: dict[str, Any]
) -> None:
    from pydantic import ValidationError

    assert settings_factory(**wechat_settings).provider_for("wechat") == "wechatpay"
    for refused, reason in (
        ({"wechatpay_mchid": None}, "WECHATPAY_MCHID"),
        ({"wechatpay_apiv3_key": "short"}, "32 bytes"),
        ({"wechatpay_public_key_id": "PUB_KEY_ID_0114232134912410000000000000"}, "go together"),
    ):
        with pytest.raises(ValidationError, match=reason):
            settings_factory(**(wechat_settings | refused))


async def test_the_daily_bill_is_reconciled_with_our_records(svc: Any, wechat: tuple[FakeWechatPay, str]) -> None:
    """A real ALL trade bill (backticked CSV, its SHA1 in the signed answer) from the fake, with a withdrawal
    refunded through the channel: matched lines agree, each kind of mismatch is found, a tampered file is refused."""
    from asset_credit_svc.statements import service as statements

    fake, _ = wechat
    user = uuid.uuid4()

    async def paid(amount_fen: int, notified: bool = True) -> tuple[str, Order]:
        top_up = await svc.top_up(user, amount_fen, "wechat")
        pay = await svc.client.post(f"/v1/wallet/top-ups/{top_up['top_up_id']}/pay", headers=svc.auth(user))
        order = fake.pay_app(pay.json()["pay_params"])
        if notified:
            assert (await fake.deliver(svc.client, fake.notification(order))).status_code == 200
        return str(top_up["top_up_id"]), order

    await paid(3000)  # agreed on both sides
    not_credited, _ = await paid(1500, notified=False)
    differs, differing = await paid(800)
    withdrawal = await svc.client.post(  # one top-up's order takes it back
        "/v1/wallet/withdrawals",
        json={"amount_fen": 800},
        headers={**svc.auth(user), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert withdrawal.status_code == 201, withdrawal.text

    async def refunded() -> bool:
        return bool(await sql(svc, "SELECT 1 FROM withdrawal_parts WHERE status = 'succeeded'"))

    await eventually(refunded, timeout=10, what="the withdrawal refunded through the channel")
    [(part_id,)] = await sql(svc, "SELECT id FROM withdrawal_parts")
    [refunded_order] = [o for o in fake.orders.values() if o.refunds]
    del refunded_order.refunds[to_wire(f"wd_{part_id}")]  # the channel's bill leaves it out
    differing.total = 900  # and its record of the order says otherwise

    today = datetime.now(BEIJING).date()
    path = f"/v1/admin/reconciliation/wechat/statements/{today}"
    finance = {"Authorization": f"Bearer {svc.signer.issue('fin-1', kind='admin', roles=['finance'])}"}
    report = (await svc.client.post(path, headers=finance)).json()
    assert {(m["kind"], m["number"], m["problem"]) for m in report["mismatches"]} == {
        ("payment", not_credited, "missing_on_our_side"),
        ("payment", differs, "amount_differs"),
        ("refund", f"wd_{part_id}", "missing_on_their_side"),
    }, report
    assert (report["lines"], report["statement_payments_fen"], report["statement_refunds_fen"]) == (3, 5400, 0)
    assert (report["our_payments_fen"], report["our_refunds_fen"]) == (3800, 800)
    assert report["statement_fees_fen"] == 18 + 9 + 5  # 0.6 %, to the fen, half up

    # The channel lists the refund after all: the daily job (the same day, two runs) clears it.
    refunded_order.refunds[to_wire(f"wd_{part_id}")] = 800
    for _ in range(2):
        await statements.reconcile_recent_days(
            svc.runtime, svc.runtime.extras["payment_providers"], days=1, today=today + timedelta(days=1)
        )
    stored = (await svc.client.get(path, headers=finance)).json()
    assert {m["problem"] for m in stored["mismatches"]} == {"missing_on_our_side", "amount_differs"}
    assert (stored["lines"], stored["statement_refunds_fen"]) == (4, 800)
    assert (await sql(svc, "SELECT count(*) FROM statement_mismatches"))[0][0] == 2

    fake.corrupt_bills = True
    assert (await svc.client.post(path, headers=finance)).json()["code"] == "provider_unavailable"
    assert (await svc.client.get(path, headers=finance)).json() == stored  # the last good result stays
    tomorrow = f"/v1/admin/reconciliation/wechat/statements/{today + timedelta(days=1)}"
    assert (await svc.client.post(tomorrow, headers=finance)).json()["code"] == "statement_not_ready"


async def test_stale_top_ups_are_asked_and_expired_ones_closed_at_wechat_pay(
    svc: Any, wechat: tuple[FakeWechatPay, str]
) -> None:
    """Issue 14: a top-up paid whose notification never came is found by querying the order; one nobody paid in
    time is closed at WeChat Pay (it can no longer be paid) and failed as expired."""
    fake, _ = wechat
    user = uuid.uuid4()
    paid, unpaid = [await svc.top_up(user, amount, "wechat") for amount in (1200, 3400)]

    async def opened() -> bool:
        return all(to_wire(t["top_up_id"]) in fake.orders for t in (paid, unpaid))

    await eventually(opened, what="both orders opened at WeChat Pay")
    fake.pay(to_wire(paid["top_up_id"]))  # paid at WeChat Pay; its notification never came
    now = datetime.now(UTC) + timedelta(seconds=1)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        outcomes = await top_ups.resolve_stale_top_ups(session, svc.runtime, older_than=now, expire_before=now)
    assert outcomes == {"succeeded": 1, "expired": 1}
    assert await top_up_status(svc, user, paid["top_up_id"]) == "succeeded"
    assert await top_up_status(svc, user, unpaid["top_up_id"]) == "failed"
    assert fake.orders[to_wire(unpaid["top_up_id"])].state == "CLOSED"
    assert f"POST /v3/pay/transactions/out-trade-no/{to_wire(unpaid['top_up_id'])}/close" in fake.calls
    assert await svc.balance(user) == 1200
    provider = svc.provider("wechat")
    with pytest.raises(PaymentProviderError):
        await provider.close_order(paid["top_up_id"])  # ORDERPAID
    await provider.close_order(str(uuid.uuid4()))  # unknown there: nothing to close
