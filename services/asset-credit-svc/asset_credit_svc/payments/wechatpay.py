"""WeChat Pay API v3 behind `PaymentProvider`: app/JSAPI prepay, notification, query, close, refund, refund query.

Requests carry `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,signature=..,timestamp=..,
serial_no=..`: SHA256withRSA with the merchant's private key over `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\n
BODY\\n`, `serial_no` being the merchant certificate's. Every answer, and every notification, is signed by
WeChat Pay over `TIMESTAMP\\nNONCE\\nBODY\\n` (headers `Wechatpay-Timestamp`, `-Nonce`, `-Signature`,
`-Serial`): it is believed only when the signature verifies with the platform certificate named by
`Wechatpay-Serial` (or WeChat Pay's public key, for merchants given a `PUB_KEY_ID_...`). Platform
certificates come from files or from `GET /v3/certificates`, whose certificates are encrypted with the
APIv3 key (AEAD_AES_256_GCM), which is what makes them trustworthy. A notification's content is
encrypted the same way; it is decrypted only after its signature verified and only when its timestamp is
within five minutes (WeChat Pay signs each attempt anew, so an old signed copy is a replay).

We use `cryptography` and httpx directly: wechatpayv3 2.0.4 fixes the gateway address in code (no test
gateway) and its synchronous client blocks on requests.
"""

import base64
import binascii
import csv
import hashlib
import io
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asset_credit_svc.payments import rsa
from asset_credit_svc.payments.order_numbers import from_wire, to_wire
from asset_credit_svc.payments.providers import (
    JSON_ACK,
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

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
MAX_CLOCK_SKEW_S = 300
MAX_NOTIFICATION_BYTES = 16 * 1024
MAX_BILL_BYTES = 64 * 1024 * 1024

TRADE_STATES = {
    "SUCCESS": OrderState.SUCCESS,
    "REFUND": OrderState.SUCCESS,  # paid, then (partly) refunded
    "NOTPAY": OrderState.PENDING,
    "USERPAYING": OrderState.PENDING,
    "CLOSED": OrderState.FAILED,
    "REVOKED": OrderState.FAILED,
    "PAYERROR": OrderState.FAILED,
}
REFUND_STATES = {
    "SUCCESS": RefundState.SUCCESS,
    "PROCESSING": RefundState.PROCESSING,
    "ABNORMAL": RefundState.FAILED,
    "CLOSED": RefundState.FAILED,
}


def serial_of(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:X}"


def aead_decrypt(apiv3_key: bytes, resource: Mapping[str, Any]) -> bytes:
    """AEAD_AES_256_GCM with the APIv3 key; raises ValueError when it was not sealed with it."""
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise ValueError(f"algorithm {resource.get('algorithm')!r}")
    try:
        nonce = str(resource["nonce"]).encode()
        data = str(resource.get("associated_data") or "").encode()
        return AESGCM(apiv3_key).decrypt(nonce, base64.b64decode(str(resource["ciphertext"])), data)
    except (KeyError, binascii.Error, InvalidTag) as exc:
        raise ValueError(f"cannot decrypt: {exc!r}") from None


BEIJING = timezone(timedelta(hours=8))


def rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text)


def bill_fen(amount: str) -> int:
    """The bill's amounts are yuan with two decimals (`43.50`), refunds' fees negative."""
    negative = amount.startswith("-")
    whole, _, cents = amount.lstrip("-").partition(".")
    if not whole.isdigit() or not (cents == "" or (cents.isdigit() and len(cents) <= 2)):
        raise ValueError(f"not an amount: {amount!r}")
    value = int(whole) * 100 + int(cents.ljust(2, "0") or "0")
    return -value if negative else value


def fee_fen(amount: str) -> int:
    """Fees are yuan with five decimals (`0.26100`): to the fen, half up, as WeChat Pay settles them."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def parse_bill(text: str) -> list[StatementLine]:
    """A trade bill (`bill_type=ALL`): CSV, a header line, one line per payment (交易状态 SUCCESS) or refund
    (REFUND, with 商户退款单号 and 退款金额), every value prefixed with a backtick, then a totals title
    (总交易单数, ...) and its line."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    lines: list[StatementLine] = []
    try:
        column = {name: header.index(name) for name in BILL_COLUMNS}
        for row in rows[1:]:
            if not row or not row[0].startswith("`"):
                break  # the totals
            value = {name: row[i].strip().removeprefix("`") for name, i in column.items()}
            state = value["交易状态"]
            if state not in ("SUCCESS", "REFUND"):
                continue
            refund = state == "REFUND"
            out_trade_no = from_wire(value["商户订单号"])
            lines.append(
                StatementLine(
                    kind="refund" if refund else "payment",
                    number=from_wire(value["商户退款单号"]) if refund else out_trade_no,
                    out_trade_no=out_trade_no,
                    trade_no=value["微信订单号"],
                    amount_fen=bill_fen(value["退款金额"] if refund else value["订单金额"]),
                    fee_fen=abs(fee_fen(value["手续费"] or "0")),
                    at=datetime.strptime(value["交易时间"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING),
                )
            )
    except (ValueError, IndexError) as exc:
        raise PaymentProviderError(f"wechat pay bill: a line we cannot read ({exc!r})") from None
    return lines


BILL_COLUMNS = ("交易时间", "微信订单号", "商户订单号", "交易状态", "商户退款单号", "退款金额", "手续费", "订单金额")


@dataclass
class WechatPayConfig:
    mchid: str
    appid: str
    merchant_key: rsa_keys.RSAPrivateKey
    merchant_serial_no: str
    apiv3_key: bytes
    api_url: str
    notify_url: str
    trade_type: Literal["app", "jsapi"] = "app"
    # WeChat Pay's keys by serial: platform certificates, and its public key under its PUB_KEY_ID_... id.
    platform_keys: dict[str, rsa_keys.RSAPublicKey] = field(default_factory=dict)


class WechatPayProvider:
    channel = "wechat"
    charges_without_user = False  # the user pays in their app: no withhold agreement

    def __init__(self, config: WechatPayConfig, http: httpx.AsyncClient) -> None:
        if len(config.apiv3_key) != 32:
            raise ValueError("the APIv3 key is 32 bytes")
        self._config = config
        self._http = http

    # -- keys --------------------------------------------------------------------------------------

    @property
    def has_keys(self) -> bool:
        return bool(self._config.platform_keys)

    async def refresh_certificates(self) -> int:
        """Fetches the platform certificates (their envelope sealed with the APIv3 key); returns how many."""
        status, body = await self._request("GET", "/v3/certificates", verify=False)
        if status != 200:
            raise PaymentProviderError(f"wechat pay certificates: HTTP {status}")
        now = datetime.now(UTC)
        found: dict[str, rsa_keys.RSAPublicKey] = {}
        for item in body.get("data", []):
            try:
                certificate = x509.load_pem_x509_certificate(
                    aead_decrypt(self._config.apiv3_key, item["encrypt_certificate"])
                )
            except (KeyError, ValueError) as exc:
                log.warning("unusable wechat pay certificate", extra={"error": repr(exc)})
                continue
            key = certificate.public_key()
            if certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc and isinstance(
                key, rsa_keys.RSAPublicKey
            ):
                found[serial_of(certificate)] = key
        self._config.platform_keys.update(found)
        return len(found)

    def _verified(self, headers: Mapping[str, str], body: bytes) -> bool:
        key = self._config.platform_keys.get(headers.get("wechatpay-serial", ""))
        if key is None:
            return False
        message = f"{headers.get('wechatpay-timestamp', '')}\n{headers.get('wechatpay-nonce', '')}\n".encode()
        return rsa.verify(key, message + body + b"\n", headers.get("wechatpay-signature"))

    # -- requests ----------------------------------------------------------------------------------

    def authorization(self, method: str, path: str, body: str) -> str:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n".encode()
        signature = rsa.sign(self._config.merchant_key, message)
        return (
            f'{SCHEMA} mchid="{self._config.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self._config.merchant_serial_no}"'
        )

    async def _request(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None, *, verify: bool = True
    ) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False) if payload is not None else ""
        headers = {
            "Authorization": self.authorization(method, path, body),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        try:
            response = await self._http.request(
                method, self._config.api_url.rstrip("/") + path, content=body.encode(), headers=headers
            )
        except httpx.HTTPError as exc:
            raise PaymentProviderError(f"wechat pay {method} {path}: {exc!r}") from None
        if response.status_code >= 500:
            raise PaymentProviderError(f"wechat pay {method} {path}: HTTP {response.status_code}")
        if verify and not self._verified(response.headers, response.content):
            serial = response.headers.get("wechatpay-serial", "")
            if serial and serial not in self._config.platform_keys and not serial.startswith("PUB_KEY_ID_"):
                await self.refresh_certificates()  # WeChat Pay rotated its certificate
            if not self._verified(response.headers, response.content):
                raise PaymentProviderError(f"wechat pay {method} {path}: the answer's signature does not verify")
        try:
            content = response.json() if response.content else {}
        except ValueError:
            raise PaymentProviderError(f"wechat pay {method} {path}: an answer that is not JSON") from None
        if not isinstance(content, dict):
            raise PaymentProviderError(f"wechat pay {method} {path}: an answer that is not an object")
        return response.status_code, content

    # -- PaymentProvider ---------------------------------------------------------------------------

    async def create_order(self, order: PaymentOrder) -> CreatedOrder:
        if order.amount_fen <= 0:
            raise PaymentProviderError("amount must be positive")
        jsapi = self._config.trade_type == "jsapi"
        if jsapi and not order.payer:
            raise PaymentProviderError("a JSAPI order needs the payer's openid")
        payload: dict[str, Any] = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "description": order.subject,
            "out_trade_no": to_wire(order.out_trade_no),
            "notify_url": self._config.notify_url,
            "amount": {"total": order.amount_fen, "currency": "CNY"},
        }
        if jsapi:
            payload["payer"] = {"openid": order.payer}
        # The same out_trade_no with the same content answers the same prepay_id.
        status, answer = await self._request("POST", f"/v3/pay/transactions/{self._config.trade_type}", payload)
        prepay_id = answer.get("prepay_id")
        if status != 200 or not isinstance(prepay_id, str):
            raise PaymentProviderError(f"wechat pay prepay: {status} {answer.get('code')}")
        return CreatedOrder(order.out_trade_no, self._client_params(prepay_id))

    def _client_params(self, prepay_id: str) -> dict[str, str]:
        """What the WeChat SDK takes to pay, signed with the merchant key."""
        appid, timestamp, nonce = self._config.appid, str(int(time.time())), secrets.token_hex(16)
        if self._config.trade_type == "jsapi":
            package = f"prepay_id={prepay_id}"
            sign = rsa.sign(self._config.merchant_key, f"{appid}\n{timestamp}\n{nonce}\n{package}\n".encode())
            return {
                "appId": appid,
                "timeStamp": timestamp,
                "nonceStr": nonce,
                "package": package,
                "signType": "RSA",
                "paySign": sign,
            }
        sign = rsa.sign(self._config.merchant_key, f"{appid}\n{timestamp}\n{nonce}\n{prepay_id}\n".encode())
        return {
            "appid": appid,
            "partnerid": self._config.mchid,
            "prepayid": prepay_id,
            "package": "Sign=WXPay",
            "noncestr": nonce,
            "timestamp": timestamp,
            "sign": sign,
        }

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentNotification:
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise MalformedNotification("notification too large")
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("wechatpay-signature-type", SCHEMA) != SCHEMA:
            raise InvalidSignature("unknown signature type")
        if not self._verified(lowered, body):
            raise InvalidSignature("notification signature does not verify")
        try:
            signed_at = int(lowered.get("wechatpay-timestamp", ""))
        except ValueError:
            raise InvalidSignature("notification timestamp is not a number") from None
        if abs(time.time() - signed_at) > MAX_CLOCK_SKEW_S:
            raise InvalidSignature("notification signed too long ago (a replay)")
        try:
            envelope = json.loads(body)
            if envelope.get("event_type") != "TRANSACTION.SUCCESS":
                raise MalformedNotification(f"event {envelope.get('event_type')!r} is not a payment")
            transaction = json.loads(aead_decrypt(self._config.apiv3_key, envelope["resource"]))
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, ValueError) as exc:
            if isinstance(exc, MalformedNotification):
                raise
            raise MalformedNotification(f"notification cannot be read: {exc!r}"[:300]) from None
        if not isinstance(transaction, dict):
            raise MalformedNotification("the transaction is not an object")
        if transaction.get("mchid") != self._config.mchid or transaction.get("appid") != self._config.appid:
            raise MalformedNotification("notification for another merchant or app")
        if transaction.get("trade_state") != "SUCCESS":
            raise MalformedNotification(f"trade_state {transaction.get('trade_state')!r} is not a payment")
        try:
            return PaymentNotification(
                out_trade_no=from_wire(transaction["out_trade_no"]),
                trade_no=transaction["transaction_id"],
                amount_fen=transaction["amount"]["total"],
                status="SUCCESS",
                paid_at=rfc3339(transaction["success_time"]) if transaction.get("success_time") else None,
                nonce=str(envelope.get("id") or lowered["wechatpay-nonce"])[:64],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedNotification(f"notification lacks or garbles {exc}"[:300]) from None

    async def query_order(self, out_trade_no: str, placed_at: datetime | None = None) -> OrderQuery:
        path = f"/v3/pay/transactions/out-trade-no/{quote(to_wire(out_trade_no), safe='')}?mchid={self._config.mchid}"
        status, answer = await self._request("GET", path)
        if status == 404 or answer.get("code") == "ORDER_NOT_EXIST":
            return OrderQuery(out_trade_no, OrderState.NOT_FOUND)
        if status != 200:
            raise PaymentProviderError(f"wechat pay query: {status} {answer.get('code')}")
        try:
            state = TRADE_STATES[answer["trade_state"]]
            success_time = answer.get("success_time")
            return OrderQuery(
                out_trade_no,
                state,
                int(answer["amount"]["total"]),
                answer.get("transaction_id"),
                rfc3339(success_time) if success_time and state == OrderState.SUCCESS else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PaymentProviderError(f"wechat pay query: an answer without {exc}") from None

    async def close_order(self, out_trade_no: str, placed_at: datetime | None = None) -> None:
        """Close an unpaid order (204): it can no longer be paid. An order WeChat Pay does not know counts as
        closed; a paid one answers ORDERPAID, raised as PaymentProviderError."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(to_wire(out_trade_no), safe='')}/close"
        status, answer = await self._request("POST", path, {"mchid": self._config.mchid})
        if status == 204 or status == 404 or answer.get("code") == "ORDER_NOT_EXIST":
            return
        raise PaymentProviderError(f"wechat pay close: {status} {answer.get('code')}")

    async def refund(
        self,
        out_trade_no: str,
        refund_no: str,
        amount_fen: int,
        placed_at: datetime | None = None,
        refund_placed_at: datetime | None = None,
    ) -> None:
        order = await self.query_order(out_trade_no)  # WeChat Pay wants the order's total with a refund
        if order.state != OrderState.SUCCESS or order.amount_fen is None:
            raise PaymentProviderError(f"order {out_trade_no} is not paid ({order.state})")
        payload = {
            "out_trade_no": to_wire(out_trade_no),
            "out_refund_no": to_wire(refund_no),
            "amount": {"refund": amount_fen, "total": order.amount_fen, "currency": "CNY"},
        }
        # The same out_refund_no again answers the refund already made: nothing more moves.
        status, answer = await self._request("POST", "/v3/refund/domestic/refunds", payload)
        state = REFUND_STATES.get(str(answer.get("status")))
        if status != 200 or state not in (RefundState.SUCCESS, RefundState.PROCESSING):
            raise PaymentProviderError(f"wechat pay refund: {status} {answer.get('code') or answer.get('status')}")

    async def query_refund(
        self, out_trade_no: str, refund_no: str, refund_placed_at: datetime | None = None
    ) -> RefundQuery:
        status, answer = await self._request("GET", f"/v3/refund/domestic/refunds/{quote(to_wire(refund_no), safe='')}")
        if status == 404 or answer.get("code") == "RESOURCE_NOT_EXISTS":
            return RefundQuery(refund_no, RefundState.NOT_FOUND)
        if status != 200 or answer.get("out_trade_no") != to_wire(out_trade_no):
            raise PaymentProviderError(f"wechat pay refund query: {status} {answer.get('code')}")
        try:
            return RefundQuery(refund_no, REFUND_STATES[answer["status"]], int(answer["amount"]["refund"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PaymentProviderError(f"wechat pay refund query: an answer without {exc}") from None

    async def statement(self, bill_date: date) -> list[StatementLine]:
        status, answer = await self._request(
            "GET", f"/v3/bill/tradebill?bill_date={bill_date.isoformat()}&bill_type=ALL"
        )
        if status == 400 and answer.get("code") == "NO_STATEMENT_EXIST":
            raise StatementNotReady(f"wechat pay has no bill for {bill_date} yet")
        url, digest = answer.get("download_url"), answer.get("hash_value")
        if (
            status != 200
            or not isinstance(url, str)
            or not isinstance(digest, str)
            or answer.get("hash_type") != "SHA1"
        ):
            raise PaymentProviderError(f"wechat pay bill: {status} {answer.get('code')}")
        # The download is signed by us like any request; WeChat Pay does not sign the file: the SHA1 from the
        # signed answer above is what makes it trustworthy.
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            response = await self._http.get(url, headers={"Authorization": self.authorization("GET", path, "")})
        except httpx.HTTPError as exc:
            raise PaymentProviderError(f"wechat pay bill download: {exc!r}") from None
        if response.status_code != 200 or len(response.content) > MAX_BILL_BYTES:
            raise PaymentProviderError(f"wechat pay bill download: HTTP {response.status_code}")
        if hashlib.sha1(response.content).hexdigest() != digest.lower():  # noqa: S324 (the channel's choice)
            raise PaymentProviderError("wechat pay bill download: the file's SHA1 differs from the signed answer's")
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise PaymentProviderError("wechat pay bill download: not UTF-8") from None
        return parse_bill(text)

    def acknowledgement(self) -> NotifyAnswer:
        return JSON_ACK
