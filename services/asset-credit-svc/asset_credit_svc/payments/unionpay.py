"""The bank-card / online-banking channel: UnionPay's online gateway (全渠道, ACP 5.1.0) behind `PaymentProvider`.

Every message is a form of `k=v` fields. The merchant signs with its signing key (`signMethod=01`, `certId` =
its certificate's serial): the fields but `signature`, empty values left out, sorted by name, joined
`k=v&k=v`; the SHA-256 of that text in lower-case hex is signed with SHA256withRSA, base64. UnionPay signs its
answers and notifications the same way and puts its signing certificate in `signPubKeyCert`: we believe the
certificate only if UnionPay's middle certificate issued it, the root issued the middle one, it is valid
now and its subject names UnionPay; then its key must verify the signature.

- Pay (front-end redirect): `create_order` opens nothing at the gateway. `pay_params` is the signed form the
  user's browser (or the app's web view) posts to `/gateway/api/frontTransReq.do` (`form_action`, and the
  URL-encoded fields in `form_fields`); the bank's pages take the card, UnionPay sends the browser back to
  `frontUrl` (display only, never trusted) and POSTs the outcome to `backUrl`: the back-end notification,
  repeated until it gets HTTP 200.
- Query: `/gateway/api/queryTrans.do` by `orderId` and the order's `txnTime`: `respCode` says whether the query
  worked (`34`: no such order), `origRespCode` the order's outcome (`00` paid; `03`, `04`, `05` still in hand).
- Statement (`StatementSource`): `fileTransfer.do` on the file host (`txnType=76`, `fileType=00`, `settleDate`
  MMDD) answers, signed like every answer, `fileContent`: the day's zip, deflated (zlib) and base64-encoded. Its
  `INN<yymmdd>88ZM_<merId>` member (GBK) lists one transaction a line in fixed-width fields, each followed by one
  space (《全渠道平台接入接口规范 第3部分 文件接口》 6.1, the ZM file): `S22` a payment (消费), `S30` a refund (退货),
  the amount in fen, the `queryId`, our `orderId`, the merchant fee as `D`/`C` and twelve digits. `respCode=98`
  (no file) is "not ready". UnionPay settles from 23:00 to 23:00 Beijing time, so a payment after 23:00 is on
  the next day's file: the reconciliation's neighbouring-day rule covers it.
- Refund (退货, `txnType=04`): `/gateway/api/backTransReq.do` with the paid order's `queryId` (asked first) and
  our refund number as its own `orderId`; UnionPay answers that it took it, the outcome is queried (and
  notified to `backUrl`, which acknowledges such notices without applying them).

An order is `(merId, orderId, txnTime)` at UnionPay, so the same order or refund must always carry the same
`txnTime`: it is the time our row was made (`placed_at`), in Beijing time, never "now". `orderId` is 8 to 40
letters and digits: our number without its `_` (`order_numbers.to_wire`, then the prefix joined on).
"""

import base64
import binascii
import hashlib
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
from cryptography.x509.oid import NameOID

from asset_credit_svc.payments import rsa
from asset_credit_svc.payments.order_numbers import from_wire, to_wire
from asset_credit_svc.payments.providers import (
    CreatedOrder,
    InvalidSignature,
    MalformedNotification,
    NotificationToIgnore,
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
TXN_TIME = "%Y%m%d%H%M%S"
VERSION = "5.1.0"
FRONT_PATH = "/gateway/api/frontTransReq.do"
BACK_PATH = "/gateway/api/backTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"
FILE_PATH = "/"  # fileTransfer: the file host's root
CONSUME, REFUND, QUERY, FILE_TRANSFER = "01", "04", "00", "76"
NO_FILE = "98"
MAX_BILL_BYTES = 64 * 1024 * 1024
# The ZM file's fields (widths in bytes, GBK), each followed by one space.
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
ZM_CODE, ZM_TIME, ZM_AMOUNT, ZM_QUERY_ID, ZM_ORDER_ID, ZM_FEE, ZM_ORIG_QUERY_ID = 0, 4, 6, 9, 11, 15, 26
ZM_PAYMENT, ZM_REFUND = "S22", "S30"
B2C_GATEWAY = "000201"
OK = "00"
NO_SUCH_ORDER = "34"
IN_HAND = {"03", "04", "05"}
MAX_NOTIFICATION_BYTES = 16 * 1024
ORDER_ID = re.compile(r"^[0-9A-Za-z]{8,40}$")
_PREFIXED = re.compile(r"^(?P<prefix>[a-z]+)(?P<rest>[A-Z2-7]{26})$")


def order_id(number: str) -> str:
    """Our number as UnionPay's `orderId` (letters and digits only)."""
    wire = to_wire(number).replace("_", "")
    if not ORDER_ID.match(wire):
        raise PaymentProviderError(f"{number!r} cannot be a UnionPay orderId")
    return wire


def number_of(order: str) -> str:
    prefixed = _PREFIXED.match(order)
    return from_wire(f"{prefixed['prefix']}_{prefixed['rest']}" if prefixed else order)


def txn_time(placed_at: datetime | None) -> str:
    if placed_at is None:
        raise PaymentProviderError("unionpay needs the time the order was placed (its txnTime)")
    return placed_at.astimezone(BEIJING).strftime(TXN_TIME)


def signing_content(fields: Mapping[str, str]) -> bytes:
    """What is signed: the SHA-256, in lower-case hex, of the sorted `k=v&k=v` text without `signature`."""
    text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "signature" and v != "")
    return hashlib.sha256(text.encode()).hexdigest().encode()


def cert_id(certificate: x509.Certificate) -> str:
    """The serial of a signing certificate as UnionPay names it (`certId`: decimal)."""
    return str(certificate.serial_number)


@dataclass(frozen=True)
class UnionPayConfig:
    mer_id: str
    sign_key: rsa_keys.RSAPrivateKey
    sign_cert_id: str
    root_cert: x509.Certificate
    middle_cert: x509.Certificate
    gateway_url: str  # https://gateway.95516.com
    notify_url: str  # backUrl
    front_url: str  # where the browser lands after paying (shows the outcome; proves nothing)
    channel_type: str = "08"  # 07 PC, 08 mobile
    signer_name: str = "中国银联股份有限公司"
    file_url: str = "https://filedownload.95516.com"  # fileTransfer.do


class UnionPayProvider:
    channel = "bank_card"
    charges_without_user = False  # the user pays in their app: no withhold agreement

    def __init__(self, config: UnionPayConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    # -- signatures --------------------------------------------------------------------------------

    def signed(self, fields: Mapping[str, str]) -> dict[str, str]:
        common = {
            "version": VERSION,
            "encoding": "UTF-8",
            "signMethod": "01",
            "certId": self._config.sign_cert_id,
            "merId": self._config.mer_id,
            "accessType": "0",
        }
        if fields.get("txnType") != FILE_TRANSFER:  # a file request names no channel
            common["channelType"] = self._config.channel_type
        message = common | dict(fields)
        message["signature"] = rsa.sign(self._config.sign_key, signing_content(message))
        return message

    def verified(self, fields: Mapping[str, str]) -> bool:
        """True if UnionPay signed these fields with a certificate its chain vouches for."""
        pem = fields.get("signPubKeyCert", "")
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode())
            certificate.verify_directly_issued_by(self._config.middle_cert)
            self._config.middle_cert.verify_directly_issued_by(self._config.root_cert)
        except Exception:  # not PEM, not issued by UnionPay's chain, another algorithm: not UnionPay
            return False
        now = datetime.now(BEIJING)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return False
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or self._config.signer_name not in str(names[0].value).split("@"):
            return False
        key = certificate.public_key()
        if not isinstance(key, rsa_keys.RSAPublicKey):
            return False
        return rsa.verify(key, signing_content(fields), fields.get("signature"))

    async def _post(self, path: str, fields: Mapping[str, str], base_url: str | None = None) -> dict[str, str]:
        url = (base_url or self._config.gateway_url).rstrip("/") + path
        try:
            response = await self._http.post(url, data=self.signed(fields))
        except httpx.HTTPError as exc:
            raise PaymentProviderError(f"unionpay {path}: {exc!r}") from None
        if response.status_code != 200:
            raise PaymentProviderError(f"unionpay {path}: HTTP {response.status_code}")
        answer = dict(parse_qsl(response.text, keep_blank_values=True))
        # UnionPay signs its answers, refusals ("34: no such order") included: an unsigned one is not believed.
        if not self.verified(answer):
            raise PaymentProviderError(f"unionpay {path}: the answer's signature does not verify")
        return answer

    # -- PaymentProvider ---------------------------------------------------------------------------

    async def create_order(self, order: PaymentOrder) -> CreatedOrder:
        if order.amount_fen <= 0:
            raise PaymentProviderError("amount must be positive")
        form = self.signed(
            {
                "txnType": CONSUME,
                "txnSubType": "01",
                "bizType": B2C_GATEWAY,
                "orderId": order_id(order.out_trade_no),
                "txnTime": txn_time(order.placed_at),
                "txnAmt": str(order.amount_fen),  # UnionPay's amounts are fen
                "currencyCode": "156",
                "backUrl": self._config.notify_url,
                "frontUrl": self._config.front_url,
                "orderDesc": order.subject,
            }
        )
        action = self._config.gateway_url.rstrip("/") + FRONT_PATH
        return CreatedOrder(order.out_trade_no, {"form_action": action, "form_fields": urlencode(sorted(form.items()))})

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentNotification:
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise MalformedNotification("notification too large")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise MalformedNotification("notification is not a form") from None
        fields = dict(pairs)
        if len(fields) != len(pairs):
            raise MalformedNotification("a field is repeated")
        if not self.verified(fields):
            raise InvalidSignature("notification signature does not verify")
        if fields.get("merId") != self._config.mer_id:
            raise MalformedNotification("notification for another merchant")
        if fields.get("txnType") == REFUND:
            raise NotificationToIgnore("a refund's outcome: refunds are confirmed by query")
        if fields.get("txnType") != CONSUME or fields.get("respCode") != OK:
            raise MalformedNotification(f"txnType {fields.get('txnType')!r} respCode {fields.get('respCode')!r}")
        try:
            amount = fields["txnAmt"]
            if not amount.isdigit():
                raise ValueError("txnAmt")
            return PaymentNotification(
                out_trade_no=number_of(fields["orderId"]),
                trade_no=fields["queryId"],
                amount_fen=int(amount),
                status="SUCCESS",
                paid_at=datetime.strptime(fields["txnTime"], TXN_TIME).replace(tzinfo=BEIJING),
                nonce=fields["queryId"][:64],
            )
        except (KeyError, ValueError) as exc:
            raise MalformedNotification(f"notification lacks or garbles {exc}") from None

    async def query_order(self, out_trade_no: str, placed_at: datetime | None = None) -> OrderQuery:
        answer = await self._query(order_id(out_trade_no), txn_time(placed_at))
        if answer.get("respCode") == NO_SUCH_ORDER:
            return OrderQuery(out_trade_no, OrderState.NOT_FOUND)
        if answer.get("respCode") != OK:
            raise PaymentProviderError(f"unionpay query: respCode {answer.get('respCode')}")
        outcome = answer.get("origRespCode", "")
        state = OrderState.SUCCESS if outcome == OK else OrderState.PENDING if outcome in IN_HAND else OrderState.FAILED
        amount = answer.get("txnAmt", "")
        return OrderQuery(
            out_trade_no,
            state,
            int(amount) if amount.isdigit() else None,
            answer.get("queryId") or None,
            placed_at if state == OrderState.SUCCESS else None,
        )

    async def _query(self, order: str, time: str) -> dict[str, str]:
        fields = {"txnType": QUERY, "txnSubType": "00", "bizType": "000000", "orderId": order, "txnTime": time}
        return await self._post(QUERY_PATH, fields)

    async def refund(
        self,
        out_trade_no: str,
        refund_no: str,
        amount_fen: int,
        placed_at: datetime | None = None,
        refund_placed_at: datetime | None = None,
    ) -> None:
        # UnionPay is idempotent on the refund's (orderId, txnTime): the same refund asked again moves nothing.
        paid = await self.query_order(out_trade_no, placed_at)
        if paid.state != OrderState.SUCCESS or paid.trade_no is None:
            raise PaymentProviderError(f"unionpay refund: the order is {paid.state.value}")
        answer = await self._post(
            BACK_PATH,
            {
                "txnType": REFUND,
                "txnSubType": "00",
                "bizType": B2C_GATEWAY,
                "orderId": order_id(refund_no),
                "origQryId": paid.trade_no,
                "txnTime": txn_time(refund_placed_at),
                "txnAmt": str(amount_fen),
                "backUrl": self._config.notify_url,
            },
        )
        if answer.get("respCode") not in (OK, *IN_HAND):
            raise PaymentProviderError(f"unionpay refund: respCode {answer.get('respCode')} {answer.get('respMsg')}")

    async def query_refund(
        self, out_trade_no: str, refund_no: str, refund_placed_at: datetime | None = None
    ) -> RefundQuery:
        answer = await self._query(order_id(refund_no), txn_time(refund_placed_at))
        if answer.get("respCode") == NO_SUCH_ORDER:
            return RefundQuery(refund_no, RefundState.NOT_FOUND)
        if answer.get("respCode") != OK:
            raise PaymentProviderError(f"unionpay refund query: respCode {answer.get('respCode')}")
        outcome, amount = answer.get("origRespCode", ""), answer.get("txnAmt", "")
        state = RefundState.FAILED
        if outcome == OK:
            state = RefundState.SUCCESS
        elif outcome in IN_HAND:
            state = RefundState.PROCESSING
        return RefundQuery(refund_no, state, int(amount) if amount.isdigit() else None)

    async def statement(self, bill_date: date) -> list[StatementLine]:
        answer = await self._post(
            FILE_PATH,
            {
                "txnType": FILE_TRANSFER,
                "txnSubType": "01",
                "bizType": "000000",
                "fileType": "00",
                "settleDate": f"{bill_date:%m%d}",
                "txnTime": datetime.now(BEIJING).strftime(TXN_TIME),
            },
            base_url=self._config.file_url,
        )
        if answer.get("respCode") == NO_FILE:
            raise StatementNotReady(f"unionpay has no file for {bill_date} yet")
        if answer.get("respCode") != OK:
            raise PaymentProviderError(f"unionpay file: respCode {answer.get('respCode')} {answer.get('respMsg')}")
        try:
            archive = zlib.decompressobj().decompress(base64.b64decode(answer["fileContent"]), MAX_BILL_BYTES)
        except (KeyError, binascii.Error, zlib.error) as exc:
            raise PaymentProviderError(f"unionpay file: no readable fileContent ({exc!r})") from None
        return parse_bill(archive, bill_date, self._config.mer_id)

    def acknowledgement(self) -> NotifyAnswer:
        return NotifyAnswer(b"ok", "text/plain")  # UnionPay reads the HTTP 200, not the body


def _fields(line: bytes) -> list[str]:
    fields: list[str] = []
    at = 0
    for width in ZM_WIDTHS:
        fields.append(line[at : at + width].decode("gbk").strip())
        at += width + 1
    return fields


def _fee(value: str) -> int:
    """A `D`/`C` sign and twelve digits of fen: what UnionPay keeps (`D`) or gives back (`C`)."""
    if len(value) != 13 or value[0] not in "DC" or not value[1:].isdigit():
        raise ValueError(f"fee {value!r}")
    return int(value[1:])


def _when(mmddhhmmss: str, settle: date) -> datetime:
    """The transmission time (MMDDhhmmss, Beijing) in the year of the settlement day (or the one before: a
    31 December trade on the 1 January file)."""
    at = datetime.strptime(f"{settle.year}{mmddhhmmss}", "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    return at.replace(year=settle.year - 1) if at.date() > settle + timedelta(days=1) else at


def parse_bill(archive: bytes, settle: date, mer_id: str) -> list[StatementLine]:
    """The day's zip: the ZM file (`INN<yymmdd>88ZM_<merId>`) lists each payment (`S22`) and refund (`S30`); other
    transaction codes (voids, pre-authorisations) are not ours and are left out."""
    member = f"INN{settle:%y%m%d}88ZM_{mer_id}"
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            text = bundle.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise PaymentProviderError(f"unionpay file: no {member} in it ({exc!r})") from None
    lines: list[StatementLine] = []
    try:
        for raw in text.splitlines():
            if not raw.strip():
                continue
            fields = _fields(raw)
            if fields[ZM_CODE] not in (ZM_PAYMENT, ZM_REFUND) or not fields[ZM_AMOUNT].isdigit():
                continue
            number = number_of(fields[ZM_ORDER_ID])
            refund = fields[ZM_CODE] == ZM_REFUND
            lines.append(
                StatementLine(
                    kind="refund" if refund else "payment",
                    number=number,
                    # A refund names the paid order by its queryId only; its own number is what we match on.
                    out_trade_no=fields[ZM_ORIG_QUERY_ID] if refund else number,
                    trade_no=fields[ZM_QUERY_ID],
                    amount_fen=int(fields[ZM_AMOUNT]),
                    fee_fen=_fee(fields[ZM_FEE]),
                    at=_when(fields[ZM_TIME], settle),
                )
            )
    except (ValueError, UnicodeDecodeError) as exc:
        raise PaymentProviderError(f"unionpay file: a line we cannot read ({exc!r})") from None
    return lines
