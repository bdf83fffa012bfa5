"""Alipay open API (RSA2) behind `PaymentProvider`: app pay, notification, trade query, trade close, refund, refund
query.

Every request to the gateway is a form of common parameters (`app_id`, `method`, `charset`,
`sign_type=RSA2`, `timestamp` in Beijing time, `version=1.0`, `biz_content` as JSON) signed with the
app's private key: the parameters but `sign`, without empty values, sorted by name, joined as
`k=v&k=v` (values not URL-encoded), SHA256withRSA, base64. The answer is JSON:
`{"<method with _ for .>_response": {...}, "sign": "..."}`, whose signature covers the exact text of
the response object; it is verified with Alipay's public key before anything in it is believed.

App pay opens nothing at the gateway: the signed, URL-encoded parameters are the "order string" the
user's app hands to the Alipay SDK, and the trade exists once the user confirms. Alipay then POSTs a
form (`trade_status_sync`) to `notify_url`, signed the same way but over everything except `sign` and
`sign_type`, and repeats it until the body of our answer is the text `success`.

We use `cryptography` and httpx directly: python-alipay-sdk calls the gateway with blocking urllib
(it would stall the event loop) and brings pycryptodomex for what `cryptography` already does here.
"""

import csv
import io
import json
import logging
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

from asset_credit_svc.payments import rsa
from asset_credit_svc.payments.order_numbers import from_wire, to_wire
from asset_credit_svc.payments.providers import (
    CreatedOrder,
    InvalidSignature,
    MalformedNotification,
    NotifyAnswer,
    OrderQuery,
    OrderState,
    PaymentNotification,
    PaymentOrder,
    PaymentProviderError,
    RefundQuery,
    RefundState,
    StatementLine,
    StatementNotReady,
)

log = logging.getLogger(__name__)

BEIJING = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS_CODE = "10000"
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
APP_PAY_PRODUCT = "QUICK_MSECURITY_PAY"
MAX_NOTIFICATION_BYTES = 16 * 1024
BILL_NOT_READY = "isp.bill_not_exist"
MAX_BILL_BYTES = 64 * 1024 * 1024

TRADE_STATES = {
    "WAIT_BUYER_PAY": OrderState.PENDING,
    "TRADE_SUCCESS": OrderState.SUCCESS,
    "TRADE_FINISHED": OrderState.SUCCESS,  # no refund possible any more: still paid
    "TRADE_CLOSED": OrderState.FAILED,  # unpaid in time, or refunded in full
}


def yuan(amount_fen: int) -> str:
    """Alipay's amounts are yuan with two decimals, as text."""
    return f"{amount_fen // 100}.{amount_fen % 100:02d}"


def fen(amount: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    cents = value * 100
    if cents != cents.to_integral_value() or value < 0:
        raise ValueError(f"not an amount in fen: {amount!r}")
    return int(cents)


def beijing_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)


def signing_content(params: Mapping[str, str], *, exclude: tuple[str, ...]) -> bytes:
    pairs = sorted((k, v) for k, v in params.items() if k not in exclude and v != "")
    return "&".join(f"{k}={v}" for k, v in pairs).encode()


def request_content(params: Mapping[str, str]) -> bytes:
    """What the app signs in a request (`sign_type` included)."""
    return signing_content(params, exclude=("sign",))


def notification_content(params: Mapping[str, str]) -> bytes:
    """What Alipay signs in a notification (`sign_type` left out)."""
    return signing_content(params, exclude=("sign", "sign_type"))


def response_node(text: str, node: str) -> tuple[str, dict[str, Any], str | None]:
    """The exact text of `node` in a gateway answer (what its signature covers), its content and the sign."""
    decoder = json.JSONDecoder()
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    found = re.search(re.escape(json.dumps(node)) + r"\s*:\s*", text)
    if found is None or node not in document:
        raise ValueError(f"the answer has no {node}")
    begin = found.end()
    content, end = decoder.raw_decode(text, begin)
    if not isinstance(content, dict):
        raise ValueError(f"{node} is not an object")
    sign = document.get("sign")
    return text[begin:end], content, sign if isinstance(sign, str) else None


def _member_name(info: zipfile.ZipInfo) -> str:
    """Alipay writes the names in GBK without the UTF-8 flag, which zipfile then reads as cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def parse_bill(archive: bytes) -> list[StatementLine]:
    """A trade bill (`bill_type=trade`): a zip of GBK CSV files, of which `<pid>_<date>_业务明细.csv` lists each
    trade and refund. Its lines starting with `#` are titles and totals; values may carry padding tabs;
    refunds are negative amounts; 服务费 (the fee) is what Alipay keeps (negative) or gives back (refunds)."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            [detail] = [i for i in bundle.infolist() if _member_name(i).endswith("业务明细.csv")]
            text = bundle.read(detail).decode("gbk")
    except (zipfile.BadZipFile, ValueError, UnicodeDecodeError) as exc:
        raise PaymentProviderError(f"alipay bill: not a trade bill ({exc!r})") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if row and not row[0].startswith("#")]
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    lines: list[StatementLine] = []
    try:
        column = {name: header.index(name) for name in BILL_COLUMNS}
        for row in rows[1:]:
            value = {name: row[i].strip() for name, i in column.items()}
            refund = value["业务类型"] == "退款"
            if value["业务类型"] not in ("交易", "退款"):
                continue
            out_trade_no = from_wire(value["商户订单号"])
            lines.append(
                StatementLine(
                    kind="refund" if refund else "payment",
                    number=from_wire(value["退款批次号/请求号"]) if refund else out_trade_no,
                    out_trade_no=out_trade_no,
                    trade_no=value["支付宝交易号"],
                    amount_fen=abs(signed_fen(value["订单金额（元）"])),
                    fee_fen=abs(signed_fen(value["服务费（元）"] or "0")),
                    at=beijing_time(value["完成时间"]),
                )
            )
    except (ValueError, IndexError) as exc:
        raise PaymentProviderError(f"alipay bill: a line we cannot read ({exc!r})") from None
    return lines


BILL_COLUMNS = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "完成时间",
    "订单金额（元）",
    "服务费（元）",
    "退款批次号/请求号",
)


def signed_fen(amount: str) -> int:
    return -fen(amount[1:]) if amount.startswith("-") else fen(amount)


@dataclass(frozen=True)
class AlipayConfig:
    app_id: str
    app_private_key: rsa_keys.RSAPrivateKey
    alipay_public_key: rsa_keys.RSAPublicKey
    gateway_url: str
    notify_url: str


class AlipayProvider:
    channel = "alipay"
    charges_without_user = False  # the user pays in their app: no withhold agreement

    def __init__(self, config: AlipayConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http  # its timeout is the gateway's deadline: past it the call raises PaymentProviderError

    # -- requests ----------------------------------------------------------------------------------

    def signed_params(self, method: str, biz_content: Mapping[str, Any], **extra: str) -> dict[str, str]:
        params = {
            "app_id": self._config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(BEIJING).strftime(TIME_FORMAT),
            "version": "1.0",
            "biz_content": json.dumps(biz_content, separators=(",", ":"), ensure_ascii=False),
            **extra,
        }
        params["sign"] = rsa.sign(self._config.app_private_key, request_content(params))
        return params

    async def _call(self, method: str, biz_content: Mapping[str, Any]) -> dict[str, Any]:
        """The verified response object of `method` (whatever its code)."""
        params = self.signed_params(method, biz_content)
        try:
            response = await self._http.post(self._config.gateway_url, params={"charset": "utf-8"}, data=params)
        except httpx.HTTPError as exc:
            raise PaymentProviderError(f"alipay {method}: {exc!r}") from None
        if response.status_code != 200:
            raise PaymentProviderError(f"alipay {method}: HTTP {response.status_code}")
        node = method.replace(".", "_") + "_response"
        try:
            raw, content, sign = response_node(response.text, node)
        except ValueError:
            try:
                _, error, _ = response_node(response.text, "error_response")
            except ValueError:
                raise PaymentProviderError(f"alipay {method}: an answer we cannot read") from None
            raise PaymentProviderError(f"alipay {method}: {error.get('code')} {error.get('sub_code')}") from None
        # Alipay signs its answers, refusals ("40004 ACQ.TRADE_NOT_EXIST") included: an unsigned or
        # badly signed one is not believed either way, and the caller retries.
        if not rsa.verify(self._config.alipay_public_key, raw.encode(), sign):
            raise PaymentProviderError(f"alipay {method}: the answer's signature does not verify")
        return content

    # -- PaymentProvider ---------------------------------------------------------------------------

    async def create_order(self, order: PaymentOrder) -> CreatedOrder:
        if order.amount_fen <= 0:
            raise PaymentProviderError("amount must be positive")
        biz = {
            "out_trade_no": to_wire(order.out_trade_no),
            "total_amount": yuan(order.amount_fen),
            "subject": order.subject,
            "product_code": APP_PAY_PRODUCT,
        }
        params = self.signed_params("alipay.trade.app.pay", biz, notify_url=self._config.notify_url)
        return CreatedOrder(order.out_trade_no, {"order_string": urlencode(sorted(params.items()))})

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentNotification:
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise MalformedNotification("notification too large")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise MalformedNotification("notification is not a form") from None
        params = dict(pairs)
        if len(params) != len(pairs):
            raise MalformedNotification("a parameter is repeated")
        if params.get("sign_type") != "RSA2":
            raise InvalidSignature("only RSA2 notifications are accepted")
        if not rsa.verify(self._config.alipay_public_key, notification_content(params), params.get("sign")):
            raise InvalidSignature("notification signature does not verify")
        if params.get("app_id") != self._config.app_id:
            raise MalformedNotification("notification for another app")
        state = TRADE_STATES.get(params.get("trade_status", ""))
        if state not in (OrderState.SUCCESS, OrderState.FAILED):
            raise MalformedNotification(f"trade_status {params.get('trade_status')!r} is not an outcome")
        try:
            return PaymentNotification(
                out_trade_no=from_wire(params["out_trade_no"]),
                trade_no=params["trade_no"],
                amount_fen=fen(params["total_amount"]),
                status="SUCCESS" if state == OrderState.SUCCESS else "FAILED",
                paid_at=beijing_time(params["gmt_payment"]) if params.get("gmt_payment") else None,
                nonce=params["notify_id"],
            )
        except (KeyError, ValueError) as exc:
            raise MalformedNotification(f"notification lacks or garbles {exc}") from None

    async def query_order(self, out_trade_no: str, placed_at: datetime | None = None) -> OrderQuery:
        answer = await self._call("alipay.trade.query", {"out_trade_no": to_wire(out_trade_no)})
        if answer.get("code") != SUCCESS_CODE:
            if answer.get("sub_code") == TRADE_NOT_EXIST:
                return OrderQuery(out_trade_no, OrderState.NOT_FOUND)
            raise PaymentProviderError(f"alipay trade query: {answer.get('code')} {answer.get('sub_code')}")
        try:
            state = TRADE_STATES[answer["trade_status"]]
            paid = answer.get("send_pay_date")
            return OrderQuery(
                out_trade_no,
                state,
                fen(answer["total_amount"]),
                answer.get("trade_no"),
                beijing_time(paid) if paid and state == OrderState.SUCCESS else None,
            )
        except (KeyError, ValueError) as exc:
            raise PaymentProviderError(f"alipay trade query: an answer without {exc}") from None

    async def close_order(self, out_trade_no: str, placed_at: datetime | None = None) -> None:
        """alipay.trade.close: an unpaid trade can no longer be paid. A trade Alipay does not know (the user never
        opened the cashier) counts as closed; its order string stays payable until Alipay's own timeout, and a
        payment made with it is still credited (`payments.service.apply_notification`)."""
        answer = await self._call("alipay.trade.close", {"out_trade_no": to_wire(out_trade_no)})
        if answer.get("code") == SUCCESS_CODE or answer.get("sub_code") == TRADE_NOT_EXIST:
            return
        raise PaymentProviderError(f"alipay trade close: {answer.get('code')} {answer.get('sub_code')}")

    async def refund(
        self,
        out_trade_no: str,
        refund_no: str,
        amount_fen: int,
        placed_at: datetime | None = None,
        refund_placed_at: datetime | None = None,
    ) -> None:
        # Alipay is idempotent on out_request_no: the same refund asked again refunds nothing more.
        biz = {
            "out_trade_no": to_wire(out_trade_no),
            "refund_amount": yuan(amount_fen),
            "out_request_no": to_wire(refund_no),
        }
        answer = await self._call("alipay.trade.refund", biz)
        if answer.get("code") != SUCCESS_CODE:
            raise PaymentProviderError(f"alipay refund: {answer.get('code')} {answer.get('sub_code')}")

    async def query_refund(
        self, out_trade_no: str, refund_no: str, refund_placed_at: datetime | None = None
    ) -> RefundQuery:
        biz = {"out_trade_no": to_wire(out_trade_no), "out_request_no": to_wire(refund_no)}
        answer = await self._call("alipay.trade.fastpay.refund.query", biz)
        if answer.get("code") != SUCCESS_CODE:
            if answer.get("sub_code") == TRADE_NOT_EXIST:
                return RefundQuery(refund_no, RefundState.NOT_FOUND)
            raise PaymentProviderError(f"alipay refund query: {answer.get('code')} {answer.get('sub_code')}")
        # An empty answer (no refund_status, no out_request_no) means no such refund succeeded.
        if answer.get("refund_status") != "REFUND_SUCCESS":
            return RefundQuery(refund_no, RefundState.NOT_FOUND)
        try:
            return RefundQuery(refund_no, RefundState.SUCCESS, fen(answer["refund_amount"]))
        except (KeyError, ValueError) as exc:
            raise PaymentProviderError(f"alipay refund query: an answer without {exc}") from None

    async def statement(self, bill_date: date) -> list[StatementLine]:
        answer = await self._call(
            "alipay.data.dataservice.bill.downloadurl.query", {"bill_type": "trade", "bill_date": bill_date.isoformat()}
        )
        if answer.get("code") != SUCCESS_CODE:
            if answer.get("sub_code") == BILL_NOT_READY:
                raise StatementNotReady(f"alipay has no bill for {bill_date} yet")
            raise PaymentProviderError(f"alipay bill: {answer.get('code')} {answer.get('sub_code')}")
        url = answer.get("bill_download_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise PaymentProviderError("alipay bill: an answer without bill_download_url")
        # The address is signed by Alipay and valid for 30 s; the file itself carries no signature.
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise PaymentProviderError(f"alipay bill download: {exc!r}") from None
        if response.status_code != 200 or len(response.content) > MAX_BILL_BYTES:
            raise PaymentProviderError(f"alipay bill download: HTTP {response.status_code}")
        return parse_bill(response.content)

    def acknowledgement(self) -> NotifyAnswer:
        return NotifyAnswer(b"success", "text/plain")
