"""A sandbox provider per channel that behaves like a real one, for development and tests.

`create_order` registers the order and returns at once; in the background the sandbox "pays"
after a short random delay and POSTs a signed notification to the service's notify endpoint,
retrying with exponential backoff until it gets a 2xx (as real providers do). An amount ending in
99 fen (e.g. 1099) is declined: the notification says FAILED.

With a `state_file` the sandbox keeps its orders there, as a real provider keeps them while our service is
down: after a restart (`make chaos` kills asset-credit with -9) it still knows what was paid (queries and
refunds answer as before) and pays the orders that were waiting, notifying again. Without one it forgets.
"""

import asyncio
import json
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from asset_credit_svc.payments import signing
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
)

log = logging.getLogger(__name__)

MAX_NOTIFICATION_BYTES = 16 * 1024


def is_declined(amount_fen: int) -> bool:
    return amount_fen % 100 == 99


@dataclass
class _SandboxOrder:
    out_trade_no: str
    amount_fen: int
    trade_no: str
    state: OrderState = OrderState.PENDING
    paid_at: datetime | None = None
    refunds: dict[str, int] = field(default_factory=dict)


class SandboxProvider:
    def __init__(
        self,
        channel: str,
        secret: bytes,
        http: httpx.AsyncClient,
        *,
        pay_delay_s: tuple[float, float] = (0.05, 0.2),
        notify_attempts: int = 6,
        notify_backoff_s: float = 0.2,
        state_file: Path | None = None,
    ) -> None:
        self.channel = channel
        self.charges_without_user = True  # it pays by itself, as a withhold agreement would
        self._secret = secret
        self._http = http  # base_url = this service (settings.asset_svc_url); tests inject the ASGI app
        self._pay_delay_s = pay_delay_s
        self._notify_attempts = notify_attempts
        self._notify_backoff_s = notify_backoff_s
        self._orders: dict[str, _SandboxOrder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._state_file = state_file
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
        if state_file is not None and state_file.exists():
            for raw in json.loads(state_file.read_text()):
                paid_at = datetime.fromisoformat(raw["paid_at"]) if raw["paid_at"] else None
                order = _SandboxOrder(**{**raw, "state": OrderState(raw["state"]), "paid_at": paid_at})
                self._orders[order.out_trade_no] = order

    def resume(self) -> None:
        """Pay (and notify) the orders that were waiting when the service stopped: the provider went on."""
        for order in self._orders.values():
            if order.state == OrderState.PENDING:
                self._pay_later(order.out_trade_no)

    def _save(self) -> None:
        if self._state_file is None:
            return
        rows = [
            {**asdict(o), "state": o.state.value, "paid_at": o.paid_at and o.paid_at.isoformat()}
            for o in self._orders.values()
        ]
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(rows))
        temporary.replace(self._state_file)

    def _pay_later(self, out_trade_no: str) -> None:
        task = asyncio.create_task(self._pay_and_notify(out_trade_no), name=f"sandbox-{self.channel}-pay")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def notify_path(self) -> str:
        return f"/v1/payments/{self.channel}/notify"

    async def create_order(self, order: PaymentOrder) -> CreatedOrder:
        existing = self._orders.get(order.out_trade_no)
        if existing is not None:
            if existing.amount_fen != order.amount_fen:
                raise PaymentProviderError(f"order {order.out_trade_no} exists with another amount")
            return CreatedOrder(order.out_trade_no, {"trade_no": existing.trade_no})
        if order.amount_fen <= 0:
            raise PaymentProviderError("amount must be positive")
        trade_no = f"SBX-{self.channel.upper()}-{uuid.uuid4().hex}"
        self._orders[order.out_trade_no] = _SandboxOrder(order.out_trade_no, order.amount_fen, trade_no)
        self._save()
        self._pay_later(order.out_trade_no)
        return CreatedOrder(order.out_trade_no, {"trade_no": trade_no, "sandbox": "auto-pay"})

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentNotification:
        if len(body) > MAX_NOTIFICATION_BYTES:
            raise MalformedNotification("notification too large")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedNotification("notification is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedNotification("notification is not a JSON object")
        if not signing.verify(self._secret, self.channel, payload, headers.get(signing.SIGNATURE_HEADER)):
            raise InvalidSignature("notification signature does not verify")
        try:
            return PaymentNotification.model_validate(payload)
        except ValidationError as exc:
            raise MalformedNotification(str(exc)[:300]) from None

    async def query_order(self, out_trade_no: str, placed_at: datetime | None = None) -> OrderQuery:
        order = self._orders.get(out_trade_no)
        if order is None:
            return OrderQuery(out_trade_no, OrderState.NOT_FOUND)
        return OrderQuery(out_trade_no, order.state, order.amount_fen, order.trade_no, order.paid_at)

    async def close_order(self, out_trade_no: str, placed_at: datetime | None = None) -> None:
        order = self._orders.get(out_trade_no)
        if order is None:
            return
        if order.state == OrderState.SUCCESS:
            raise PaymentProviderError(f"order {out_trade_no} is paid; it cannot be closed")
        order.state = OrderState.FAILED  # a closed order: the background payment below no longer pays it
        self._save()

    async def refund(
        self,
        out_trade_no: str,
        refund_no: str,
        amount_fen: int,
        placed_at: datetime | None = None,
        refund_placed_at: datetime | None = None,
    ) -> None:
        order = self._orders.get(out_trade_no)
        if order is None or order.state != OrderState.SUCCESS:
            raise PaymentProviderError(f"order {out_trade_no} is not paid")
        if refund_no in order.refunds:
            if order.refunds[refund_no] != amount_fen:
                raise PaymentProviderError(f"refund {refund_no} exists with another amount")
            return
        if amount_fen <= 0 or amount_fen > order.amount_fen - sum(order.refunds.values()):
            raise PaymentProviderError("refund above what is left of the order")
        order.refunds[refund_no] = amount_fen
        self._save()

    async def query_refund(
        self, out_trade_no: str, refund_no: str, refund_placed_at: datetime | None = None
    ) -> RefundQuery:
        order = self._orders.get(out_trade_no)
        if order is None or refund_no not in order.refunds:
            return RefundQuery(refund_no, RefundState.NOT_FOUND)
        return RefundQuery(refund_no, RefundState.SUCCESS, order.refunds[refund_no])

    def acknowledgement(self) -> NotifyAnswer:
        return JSON_ACK

    def signed_notification(self, payload: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers the sandbox sends for `payload` (tests replay and forge with it)."""
        return signing.canonical_json(payload), {
            signing.SIGNATURE_HEADER: signing.sign(self._secret, self.channel, payload),
            "Content-Type": "application/json",
        }

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pay_and_notify(self, out_trade_no: str) -> None:
        await asyncio.sleep(random.uniform(*self._pay_delay_s))
        order = self._orders[out_trade_no]
        if order.state != OrderState.PENDING:  # closed meanwhile
            return
        if is_declined(order.amount_fen):
            order.state = OrderState.FAILED
        else:
            order.state = OrderState.SUCCESS
            order.paid_at = datetime.now(UTC)
        self._save()
        payload = {
            "out_trade_no": order.out_trade_no,
            "trade_no": order.trade_no,
            "amount_fen": order.amount_fen,
            "status": order.state.value,
            "paid_at": order.paid_at.isoformat() if order.paid_at else None,
            "nonce": uuid.uuid4().hex,
        }
        body, headers = self.signed_notification(payload)
        for attempt in range(1, self._notify_attempts + 1):
            try:
                response = await self._http.post(self.notify_path, content=body, headers=headers)
                if response.is_success:
                    return
                log.warning(
                    "sandbox notification refused",
                    extra={"out_trade_no": out_trade_no, "status": response.status_code, "attempt": attempt},
                )
            except httpx.HTTPError as exc:
                log.warning(
                    "sandbox notification failed",
                    extra={"out_trade_no": out_trade_no, "error": repr(exc), "attempt": attempt},
                )
            if attempt < self._notify_attempts:
                await asyncio.sleep(self._notify_backoff_s * 2 ** (attempt - 1))
        log.error("sandbox gave up notifying", extra={"out_trade_no": out_trade_no})
