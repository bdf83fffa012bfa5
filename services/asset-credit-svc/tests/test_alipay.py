"""Integration: the Alipay adapter against a fake Alipay gateway on a real port, with RSA keys made for
the test. The fake checks the adapter's RSA2 signatures with the app's public key (its own canonical
form, not the adapter's), signs its answers and notifications with "Alipay's" private key, sends
duplicate, late and forged notifications, and can stall past the adapter's timeout. Notifications go
over HTTP to the in-process service, through the real top-up and charge flows (real PG)."""

import asyncio
import csv
import io
import json
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asset_credit_svc.payments import service as top_ups
from asset_credit_svc.payments.order_numbers import to_wire
from asset_credit_svc.payments.providers import OrderState, PaymentProviderError, RefundState
from kit.db import unit_of_work

from .gateway_kit import (
    BEIJING,
    FakeGateway,
    fee_becomes_a_debt_paid_in_the_app,
    new_key,
    post_form,
    private_pem,
    public_pem,
    sha256_rsa,
    sha256_rsa_ok,
    sql,
    top_up_status,
)

pytestmark = pytest.mark.integration

APP_ID = "2021000000000001"
NOTIFY_URL = "http://test/v1/payments/alipay/notify"
NUMBER = re.compile(r"^[0-9A-Za-z_]{1,64}$")  # Alipay's out_trade_no and out_request_no


def unsigned(params: dict[str, str], *drop: str) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in drop and params[k] != "")


@dataclass
class Trade:
    out_trade_no: str
    amount: str
    trade_no: str
    status: str = "WAIT_BUYER_PAY"
    paid_at: str | None = None
    refunds: dict[str, str] = field(default_factory=dict)
    refunded_at: dict[str, str] = field(default_factory=dict)


class FakeAlipay(FakeGateway):
    """Alipay's gateway (`/gateway.do`) and cashier, as far as the adapter can tell."""

    def __init__(self, app_public_key: rsa.RSAPublicKey) -> None:
        self.app_public_key = app_public_key
        self.key = new_key()  # "Alipay's" own key; the service is given its public half
        self.trades: dict[str, Trade] = {}
        self.methods: list[str] = []  # the requests whose signature verified
        self.sign_answers_with: rsa.RSAPrivateKey | None = None
        self.unlisted: set[str] = set()  # trades the bill leaves out (a channel's own mistake)
        self.bills: dict[str, bytes] = {}  # by download token
        super().__init__(
            [
                Route("/gateway.do", self.gateway, methods=["POST"]),
                Route("/bills/{token}", self.bill_download, methods=["GET"]),
            ]
        )

    # -- the gateway -------------------------------------------------------------------------------

    def answer(self, method: str, content: dict[str, str]) -> Response:
        node = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        sign = sha256_rsa(self.sign_answers_with or self.key, node)
        name = method.replace(".", "_") + "_response"
        return Response(f'{{"{name}":{node},"sign":"{sign}"}}', media_type="application/json;charset=utf-8")

    async def gateway(self, request: Request) -> Response:
        await self.hold()
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if (
            params.get("app_id") != APP_ID
            or params.get("sign_type") != "RSA2"
            or not sha256_rsa_ok(self.app_public_key, unsigned(params, "sign"), params.get("sign", ""))
        ):
            body = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature"}
            return Response(json.dumps({"error_response": body}), media_type="application/json")
        method = params["method"]
        self.methods.append(method)
        biz = json.loads(params["biz_content"])
        if method == "alipay.data.dataservice.bill.downloadurl.query":
            day = date.fromisoformat(biz["bill_date"])
            if biz.get("bill_type") != "trade" or day >= datetime.now(BEIJING).date() + timedelta(days=1):
                return self.answer(
                    method, {"code": "40004", "msg": "Business Failed", "sub_code": "isp.bill_not_exist"}
                )
            token = uuid.uuid4().hex
            self.bills[token] = self.bill(day)
            url = f"{request.base_url}bills/{token}"
            return self.answer(method, {"code": "10000", "msg": "Success", "bill_download_url": url})
        numbers = [biz.get("out_trade_no", ""), *([biz["out_request_no"]] if "out_request_no" in biz else [])]
        if not all(NUMBER.match(n) for n in numbers):
            return self.answer(method, {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.INVALID_PARAMETER"})
        trade = self.trades.get(biz.get("out_trade_no", ""))
        ok = {"code": "10000", "msg": "Success"}
        missing = {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST"}
        if trade is None:
            return self.answer(method, missing)
        if method == "alipay.trade.query":
            found = {"out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no, "trade_status": trade.status}
            found |= {"total_amount": trade.amount} | ({"send_pay_date": trade.paid_at} if trade.paid_at else {})
            return self.answer(method, ok | found)
        if method == "alipay.trade.close":
            if trade.status != "WAIT_BUYER_PAY":
                return self.answer(method, {**missing, "sub_code": "ACQ.TRADE_STATUS_ERROR"})
            trade.status = "TRADE_CLOSED"
            return self.answer(method, ok | {"out_trade_no": trade.out_trade_no, "trade_no": trade.trade_no})
        if method == "alipay.trade.refund":
            request_no, amount = biz["out_request_no"], biz["refund_amount"]
            if request_no in trade.refunds:  # the same refund again: nothing moves
                return self.answer(method, ok | {"fund_change": "N", "refund_fee": trade.refunds[request_no]})
            left = cents(trade.amount) - sum(cents(a) for a in trade.refunds.values())
            if trade.status != "TRADE_SUCCESS" or cents(amount) > left:
                return self.answer(method, {**missing, "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"})
            trade.refunds[request_no] = amount
            trade.refunded_at[request_no] = datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
            return self.answer(method, ok | {"fund_change": "Y", "refund_fee": amount})
        if method == "alipay.trade.fastpay.refund.query":
            amount = trade.refunds.get(biz["out_request_no"])
            if amount is None:
                return self.answer(method, ok)
            found = {"out_request_no": biz["out_request_no"], "refund_amount": amount}
            return self.answer(method, ok | found | {"refund_status": "REFUND_SUCCESS"})
        return self.answer(method, {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.INVALID_PARAMETER"})

    # -- the daily bill ----------------------------------------------------------------------------

    def bill(self, day: date) -> bytes:
        """The trade bill as Alipay hands it out: a zip of GBK CSV files, names in GBK without the UTF-8 flag."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        out.write("#支付宝业务明细查询\r\n#账号：[20881234567890120156]\r\n")
        out.write(
            f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   终止日期：[{day + timedelta(days=1):%Y年%m月%d日} 00:00:00]\r\n"
        )
        out.write("#-----------------------------------------业务明细列表----------------------------------------\r\n")
        writer.writerow(ALIPAY_BILL_HEADER)
        trades = refunds = 0
        for trade in self.trades.values():
            if trade.out_trade_no in self.unlisted:
                continue
            if trade.paid_at and trade.paid_at.startswith(day.isoformat()):
                trades += 1
                fee = f"-{cents(trade.amount) * 6 // 1000 / 100:.2f}"
                writer.writerow(self.bill_row(trade, "交易", trade.paid_at, trade.amount, "", fee))
            for number, amount in trade.refunds.items():
                if trade.refunded_at[number].startswith(day.isoformat()):
                    refunds += 1
                    writer.writerow(
                        self.bill_row(trade, "退款", trade.refunded_at[number], f"-{amount}", number, "0.00")
                    )
        out.write("#-----------------------------------------业务明细列表结束------------------------------------\r\n")
        out.write(
            f"#交易合计：{trades}笔，退款合计：{refunds}笔\r\n#导出时间：[{datetime.now(BEIJING):%Y年%m月%d日 %H:%M:%S}]\r\n"
        )
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            for name, content in (
                (f"20881234567890120156_{day:%Y%m%d}_业务明细.csv", out.getvalue()),
                (f"20881234567890120156_{day:%Y%m%d}_业务明细(汇总).csv", "#汇总\r\n"),
            ):
                bundle.writestr(GbkName(name), content.encode("gbk"))
        return archive.getvalue()

    @staticmethod
    def bill_row(trade: Trade, kind: str, at: str, amount: str, request_no: str, fee: str) -> list[str]:
        row = dict.fromkeys(ALIPAY_BILL_HEADER, "")
        row |= {"支付宝交易号": trade.trade_no + "\t", "商户订单号": trade.out_trade_no + "\t", "业务类型": kind}
        row |= {"商品名称": "Wallet top-up", "创建时间": at, "完成时间": at, "订单金额（元）": amount}
        row |= {
            "商家实收（元）": amount,
            "退款批次号/请求号": request_no + ("\t" if request_no else ""),
            "服务费（元）": fee,
        }
        return list(row.values())

    async def bill_download(self, request: Request) -> Response:
        content = self.bills.get(request.path_params["token"])
        if content is None:
            return Response(status_code=404)
        return Response(content, media_type="application/zip")

    # -- the cashier and the notifications ---------------------------------------------------------

    def pay_order_string(self, order_string: str) -> Trade:
        """What Alipay does when the user confirms an app-pay order: checks the app's signature first."""
        params = dict(parse_qsl(order_string, keep_blank_values=True))
        assert params["method"] == "alipay.trade.app.pay" and params["app_id"] == APP_ID
        assert params["notify_url"] == NOTIFY_URL
        assert sha256_rsa_ok(self.app_public_key, unsigned(params, "sign"), params["sign"]), (
            "bad order string signature"
        )
        biz = json.loads(params["biz_content"])
        assert biz["product_code"] == "QUICK_MSECURITY_PAY" and NUMBER.match(biz["out_trade_no"])
        return self.pay(biz["out_trade_no"], biz["total_amount"])

    def pay(self, out_trade_no: str, amount: str) -> Trade:
        trade = self.trades.setdefault(out_trade_no, Trade(out_trade_no, amount, f"2026{uuid.uuid4().int % 10**24}"))
        trade.status = "TRADE_SUCCESS"
        trade.paid_at = datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        return trade

    def notification(self, trade: Trade, key: rsa.RSAPrivateKey | None = None, **changes: str) -> dict[str, str]:
        params = {
            "notify_time": datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            "notify_type": "trade_status_sync",
            "notify_id": uuid.uuid4().hex,
            "app_id": APP_ID,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "trade_status": trade.status,
            "total_amount": trade.amount,
            "receipt_amount": trade.amount,
            "gmt_payment": trade.paid_at or "",
            "subject": "支付宝 top-up",
        } | changes
        params["sign"] = sha256_rsa(key or self.key, unsigned(params, "sign", "sign_type"))
        return params

    @staticmethod
    async def deliver(client: httpx.AsyncClient, params: dict[str, str]) -> httpx.Response:
        return await post_form(client, NOTIFY_URL, params)


ALIPAY_BILL_HEADER = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
]


class GbkName(zipfile.ZipInfo):
    """A member name written in GBK without the UTF-8 flag, as Alipay's archives have them."""

    def __init__(self, name: str) -> None:
        super().__init__(name, date_time=(2026, 12, 6, 9, 0, 0))

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits


def cents(amount: str) -> int:
    yuan, _, fen = amount.partition(".")
    return int(yuan) * 100 + int(fen.ljust(2, "0"))


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
async def alipay(app_key: rsa.RSAPrivateKey) -> AsyncIterator[tuple[FakeAlipay, str]]:
    fake = FakeAlipay(app_key.public_key())
    async with fake.serve() as url:
        yield fake, url


@pytest.fixture
async def svc(
    service_factory: Callable[..., Any], alipay: tuple[FakeAlipay, str], app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> AsyncIterator[Any]:
    fake, url = alipay
    (tmp_path / "app.pem").write_bytes(private_pem(app_key))
    (tmp_path / "alipay.pem").write_bytes(public_pem(fake.key))
    async with service_factory(
        payment_provider_alipay="alipay",
        payment_notify_base_url="http://test",
        payment_gateway_timeout_s=2.0,
        alipay_app_id=APP_ID,
        alipay_gateway_url=f"{url}/gateway.do",
        alipay_app_private_key_file=tmp_path / "app.pem",
        alipay_public_key_file=tmp_path / "alipay.pem",
    ) as service:
        yield service


async def test_top_up_paid_through_alipay_credits_once(svc: Any, alipay: tuple[FakeAlipay, str]) -> None:
    fake, _ = alipay
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 4350, "alipay")
    pay = await svc.client.post(f"/v1/wallet/top-ups/{top_up['top_up_id']}/pay", headers=svc.auth(user))
    assert pay.status_code == 200, pay.text
    trade = fake.pay_order_string(pay.json()["pay_params"]["order_string"])
    assert trade.amount == "43.50" and fake.methods == []  # app pay opens nothing at the gateway

    paid = fake.notification(trade)
    first = await fake.deliver(svc.client, paid)
    assert first.status_code == 200 and first.text == "success"
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "succeeded"
    # Alipay repeats until it reads `success`, and later says TRADE_FINISHED: nothing more is credited.
    again = await asyncio.gather(*[fake.deliver(svc.client, paid) for _ in range(3)])
    finished = await fake.deliver(svc.client, fake.notification(trade, trade_status="TRADE_FINISHED"))
    assert [r.text for r in (*again, finished)] == ["success"] * 4
    assert await svc.balance(user) == 4350
    assert (await sql(svc, "SELECT provider_trade_no FROM top_ups"))[0][0] == trade.trade_no
    assert (await svc.client.post(f"/v1/wallet/top-ups/{top_up['top_up_id']}/pay", headers=svc.auth(user))).json()[
        "code"
    ] == "top_up_not_pending"

    provider = svc.provider("alipay")
    queried = await provider.query_order(top_up["top_up_id"])
    assert (queried.state, queried.amount_fen, queried.trade_no) == (OrderState.SUCCESS, 4350, trade.trade_no)
    assert queried.paid_at is not None and queried.paid_at.tzinfo is not None
    assert (await provider.query_order(str(uuid.uuid4()))).state == OrderState.NOT_FOUND

    refund_no = f"wd_{uuid.uuid4()}"  # a withdrawal's number: its UUID travels in base32
    assert (await provider.query_refund(top_up["top_up_id"], refund_no)).state == RefundState.NOT_FOUND
    await provider.refund(top_up["top_up_id"], refund_no, 1000)
    await provider.refund(top_up["top_up_id"], refund_no, 1000)  # a retry refunds nothing more
    assert trade.refunds == {to_wire(refund_no): "10.00"}
    done = await provider.query_refund(top_up["top_up_id"], refund_no)
    assert (done.state, done.amount_fen) == (RefundState.SUCCESS, 1000)
    with pytest.raises(PaymentProviderError):
        await provider.refund(top_up["top_up_id"], f"wd_{uuid.uuid4()}", 3351)  # more than is left
    assert fake.methods.count("alipay.trade.refund") == 3


async def test_forged_and_mismatched_notifications_change_nothing(svc: Any, alipay: tuple[FakeAlipay, str]) -> None:
    fake, _ = alipay
    user = uuid.uuid4()
    top_up = await svc.top_up(user, 2000, "alipay")
    trade = fake.pay(to_wire(top_up["top_up_id"]), "20.00")
    genuine = fake.notification(trade)
    refused = {
        "signed by someone else": fake.notification(trade, key=new_key()),
        "amount changed after signing": genuine | {"total_amount": "2000.00"},
        "status changed after signing": fake.notification(trade, trade_status="TRADE_CLOSED")
        | {"trade_status": "TRADE_SUCCESS", "sign": fake.notification(trade, trade_status="TRADE_CLOSED")["sign"]},
        "no signature": {k: v for k, v in genuine.items() if k != "sign"},
        "RSA (SHA1) sign type": genuine | {"sign_type": "RSA"},
        "for another app": fake.notification(trade, app_id="2021999999999999"),
        "genuine but another amount": fake.notification(trade, total_amount="19.99"),
        "genuine but not an outcome": fake.notification(trade, trade_status="WAIT_BUYER_PAY"),
    }
    for what, params in refused.items():
        response = await fake.deliver(svc.client, params)
        assert response.status_code == 400, what
        assert response.json()["code"] in {"invalid_signature", "invalid_notification", "amount_mismatch"}, what
    garbage = await svc.client.post(NOTIFY_URL, content=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert garbage.status_code == 400
    assert await top_up_status(svc, user, top_up["top_up_id"]) == "pending"
    assert await svc.balance(user) == 0

    assert (await fake.deliver(svc.client, genuine)).text == "success"
    assert await svc.balance(user) == 2000

    closed_user = uuid.uuid4()
    closed = await svc.top_up(closed_user, 500, "alipay")
    never_paid = fake.pay(to_wire(closed["top_up_id"]), "5.00")
    never_paid.status, never_paid.paid_at = "TRADE_CLOSED", None
    assert (await fake.deliver(svc.client, fake.notification(never_paid))).text == "success"
    assert await top_up_status(svc, closed_user, closed["top_up_id"]) == "failed"
    assert await svc.balance(closed_user) == 0


async def test_gateway_answers_must_be_signed_and_a_stalled_gateway_times_out(
    svc: Any, alipay: tuple[FakeAlipay, str]
) -> None:
    fake, _ = alipay
    provider = svc.provider("alipay")
    trade = fake.pay("some_order", "1.00")
    assert (await provider.query_order("some_order")).state == OrderState.SUCCESS

    fake.sign_answers_with = new_key()  # a man in the middle, or a misconfigured key
    with pytest.raises(PaymentProviderError, match="signature"):
        await provider.query_order("some_order")
    with pytest.raises(PaymentProviderError, match="signature"):
        await provider.query_order("unknown_order")  # a "not found" is not believed unsigned either
    fake.sign_answers_with = None

    await fake.times_out(provider.refund(trade.out_trade_no, "r_1", 100))
    await provider.refund(trade.out_trade_no, "r_1", 100)  # the caller's retry, same refund number
    assert trade.refunds == {"r_1": "1.00"}


async def test_a_fee_the_wallet_does_not_cover_is_a_debt_paid_through_alipay(
    svc: Any, alipay: tuple[FakeAlipay, str]
) -> None:
    fake, _ = alipay
    await fee_becomes_a_debt_paid_in_the_app(
        svc,
        "alipay",
        pay=lambda number, _placed, fen: fake.pay(to_wire(number), f"{fen // 100}.{fen % 100:02d}"),
        notify=lambda trade: fake.deliver(svc.client, fake.notification(trade)),
    )
    assert "alipay.trade.query" in fake.methods and "alipay.trade.close" in fake.methods


async def test_the_daily_bill_is_reconciled_with_our_records(svc: Any, alipay: tuple[FakeAlipay, str]) -> None:
    """A real trade bill (zip of GBK CSV) from the fake: each kind of mismatch found once, however often run."""
    from asset_credit_svc.statements import service as statements

    fake, _ = alipay
    user = uuid.uuid4()

    async def paid(amount_fen: int, notified: bool = True) -> tuple[str, Trade]:
        top_up = await svc.top_up(user, amount_fen, "alipay")
        trade = fake.pay(to_wire(top_up["top_up_id"]), f"{amount_fen // 100}.{amount_fen % 100:02d}")
        if notified:
            assert (await fake.deliver(svc.client, fake.notification(trade))).text == "success"
        return str(top_up["top_up_id"]), trade

    agreed, _ = await paid(4350)
    not_credited, _ = await paid(2000, notified=False)  # the notification never came: ours stays pending
    differs, differing = await paid(1000)
    differing.amount = "10.01"  # the channel's record says otherwise
    unlisted, gone = await paid(500)
    fake.unlisted.add(gone.out_trade_no)  # credited by us, absent from the channel's bill
    stray_refund = f"wd_{uuid.uuid4()}"  # a refund the channel made that we never recorded
    await svc.provider("alipay").refund(agreed, stray_refund, 100)

    today = datetime.now(BEIJING).date()
    path = f"/v1/admin/reconciliation/alipay/statements/{today}"
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
    assert (report["lines"], report["statement_payments_fen"], report["statement_refunds_fen"]) == (4, 7351, 100)
    assert report["our_payments_fen"] == 4350 + 1000 + 500 and report["our_refunds_fen"] == 0
    assert report["statement_fees_fen"] == (4350 + 2000 + 1001) * 6 // 1000

    # Again by hand, then by the daily job (which reconciles complete days): the same result, stored once.
    again = await svc.client.post(path, headers=finance)
    assert again.json()["mismatches"] == report["mismatches"]
    done = await statements.reconcile_recent_days(
        svc.runtime, svc.runtime.extras["payment_providers"], days=1, today=today + timedelta(days=1)
    )
    assert done == 1
    stored = await svc.client.get(path, headers=finance)
    assert stored.status_code == 200 and stored.json()["mismatches"] == report["mismatches"]
    assert (await sql(svc, "SELECT count(*) FROM statement_mismatches"))[0][0] == 4
    assert (await sql(svc, "SELECT count(*) FROM statement_lines"))[0][0] == 4
    fees = (
        "SELECT -sum(p.amount_fen), count(DISTINCT p.transaction_id) FROM postings p JOIN accounts a"
        " ON a.id = p.account_id WHERE a.kind = 'platform_provider_fees'"
    )
    assert (await sql(svc, fees))[0] == (report["statement_fees_fen"], 1)  # booked once, however often run

    # The channel fixes its bill: the next run clears that mismatch.
    fake.unlisted.clear()
    cleared = (await svc.client.post(path, headers=finance)).json()
    assert unlisted not in {m["number"] for m in cleared["mismatches"]} and len(cleared["mismatches"]) == 3
    # Its trade's fee comes with it: only the difference is booked.
    assert cleared["statement_fees_fen"] == report["statement_fees_fen"] + 500 * 6 // 1000
    assert (await sql(svc, fees))[0] == (cleared["statement_fees_fen"], 2)

    tomorrow = f"/v1/admin/reconciliation/alipay/statements/{today + timedelta(days=1)}"
    assert (await svc.client.post(tomorrow, headers=finance)).json()["code"] == "statement_not_ready"
    assert (await svc.client.get(tomorrow, headers=finance)).json()["code"] == "statement_not_reconciled"
    assert (await svc.client.post(path, headers=svc.auth(user))).status_code == 403
    assert (await svc.client.post(path.replace("alipay", "wechat"), headers=finance)).json()["code"] == (
        "unsupported_channel"
    )


async def test_stale_top_ups_are_asked_and_expired_ones_closed_at_alipay(
    svc: Any, alipay: tuple[FakeAlipay, str]
) -> None:
    """Issue 14: trade.query finds a payment whose notification never came; trade.close ends a trade nobody
    paid in time (one Alipay never saw counts as closed); both through the adapter over HTTP."""
    fake, _ = alipay
    user = uuid.uuid4()
    paid, waiting, unseen = [await svc.top_up(user, amount, "alipay") for amount in (1100, 2200, 3300)]
    fake.pay(to_wire(paid["top_up_id"]), "11.00")  # paid; the notification never came
    fake.trades[to_wire(waiting["top_up_id"])] = Trade(to_wire(waiting["top_up_id"]), "22.00", "2026000000000001")
    now = datetime.now(UTC) + timedelta(seconds=1)
    async with unit_of_work(svc.runtime.sessionmaker) as session:
        outcomes = await top_ups.resolve_stale_top_ups(session, svc.runtime, older_than=now, expire_before=now)
    assert outcomes == {"succeeded": 1, "expired": 2}
    assert [await top_up_status(svc, user, t["top_up_id"]) for t in (paid, waiting, unseen)] == [
        "succeeded",
        "failed",
        "failed",
    ]
    assert fake.trades[to_wire(waiting["top_up_id"])].status == "TRADE_CLOSED"
    assert fake.methods.count("alipay.trade.close") == 2 and fake.methods.count("alipay.trade.query") == 3
    assert await svc.balance(user) == 1100
    with pytest.raises(PaymentProviderError):
        await svc.provider("alipay").close_order(paid["top_up_id"])  # paid: Alipay refuses to close it
