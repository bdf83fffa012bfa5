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
- Refund (退货, `txnType=04`): `/gateway/api/backTransReq.do` with the paid order's `queryId` (asked first) and
  our refund number as its own `orderId`; UnionPay answers that it took it, the outcome is queried (and
  notified to `backUrl`, which acknowledges such notices without applying them).

An order is `(merId, orderId, txnTime)` at UnionPay, so the same order or refund must always carry the same
`txnTime`: it is the time our row was made (`placed_at`), in Beijing time, never "now". `orderId` is 8 to 40
letters and digits: our number without its `_` (`order_numbers.to_wire`, then the prefix joined on).
"""

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
)

log = logging.getLogger(__name__)

BEIJING = timezone(timedelta(hours=8))
TXN_TIME = "%Y%m%d%H%M%S"
VERSION = "5.1.0"
FRONT_PATH = "/gateway/api/frontTransReq.do"
BACK_PATH = "/gateway/api/backTransReq.do"
QUERY_PATH = "/gateway/api/queryTrans.do"
CONSUME, REFUND, QUERY = "01", "04", "00"
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


class UnionPayProvider:
    channel = "bank_card"

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
            "channelType": self._config.channel_type,
        }
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

    async def _post(self, path: str, fields: Mapping[str, str]) -> dict[str, str]:
        try:
            response = await self._http.post(self._config.gateway_url.rstrip("/") + path, data=self.signed(fields))
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

    def acknowledgement(self) -> NotifyAnswer:
        return NotifyAnswer(b"ok", "text/plain")  # UnionPay reads the HTTP 200, not the body
