"""Domain events into facts. The kit records each event id in the same transaction (a redelivered
event is a no-op); the unique business keys (rental id, user id, cabinet + report id, bank id) make
each handler idempotent on its own, for copies that carry another event id.

Order is event time, never arrival: a state or region is replaced only by a newer one
(`WHERE stored.at < new.at`), and every rental fact change marks the UTC hour it started in
dirty, so the hourly rollup is rebuilt from the facts for exactly that hour (late events land in
their own bucket, duplicates leave it unchanged)."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.ingest_batch import Batch, bank_row, set_banks
from analytics_svc.models import (
    BankFact,
    DepositFact,
    DevicePresence,
    RefusalFact,
    UserFact,
)
from contracts import Envelope
from contracts.events import (
    CreditChanged,
    DepositPaid,
    DepositRefunded,
    DepositRefundRequested,
    DeviceAlarmKind,
    DeviceAlarmRaised,
    DevicePresenceChanged,
    EjectFailed,
    EjectFailureReason,
    UserDeregistered,
)
from kit.kafka import Handler

FAULT_ALARMS = frozenset({DeviceAlarmKind.HIGH_TEMPERATURE})
# Refused scans that count as unmet demand in hotspots: the scanned cabinet had no bank to lend.
LACK_OF_BANK = frozenset({EjectFailureReason.NO_RENTABLE_BANK})


class Ingest:
    """The handlers, with the time zone active-user days are counted in. The frequent facts are applied
    set-based (`ingest_batch`): `apply_batch` takes a whole fetch in one transaction, and each one's
    per-event handler (the consumer's fallback and the replay of a parked event) is a batch of one."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._batch = Batch(zone)
        self._appliers: dict[str, Callable[[AsyncSession, list[Any]], Awaitable[None]]] = {
            # The order kinds are applied in within one fetch (see ingest_batch).
            "user.user.registered": self._batch.users_registered,
            "device.telemetry.reported": self._batch.telemetry,
            "device.bank.ejected": self._batch.banks_ejected,
            "device.bank.returned": self._batch.banks_returned,
            "billing.rental.started": self._batch.rentals_started,
            "billing.rental.ended": self._batch.rentals_ended,
        }

    async def apply_batch(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        """A fetch's new events in one transaction: the frequent kinds set-based, the rest one by one."""
        by_kind: dict[str, list[Any]] = {kind: [] for kind in self._appliers}
        rest: list[Envelope] = []
        for envelope in envelopes:
            if envelope.type in by_kind:
                by_kind[envelope.type].append(envelope.data)
            else:
                rest.append(envelope)
        for kind, apply in self._appliers.items():
            if by_kind[kind]:
                await apply(session, by_kind[kind])
        handlers = self.handlers()
        for envelope in rest:
            handler = handlers.get(envelope.type)
            if handler is not None:
                await handler(session, envelope)

    async def _one(self, session: AsyncSession, envelope: Envelope) -> None:
        await self._appliers[envelope.type](session, [envelope.data])

    def handlers(self) -> dict[str, Handler]:
        return {
            "user.user.registered": self._one,
            "user.user.deregistered": self.on_deregistered,
            "billing.rental.started": self._one,
            "billing.rental.ended": self._one,
            "device.bank.ejected": self._one,
            "device.eject.failed": self.on_eject_failed,
            "device.bank.returned": self._one,
            "device.telemetry.reported": self._one,
            "device.alarm.raised": self.on_alarm,
            "device.presence.changed": self.on_presence,
            "asset.deposit.paid": self.on_deposit_paid,
            "asset.deposit.refund_requested": self.on_deposit_refund,
            "asset.deposit.refunded": self.on_deposit_refund,
            "asset.credit.changed": self.on_credit_changed,
        }

    async def on_deregistered(self, session: AsyncSession, envelope: Envelope) -> None:
        """Erasure: the birth year is forgotten; `deregistered_at` keeps a late registration from restoring it."""
        data = envelope.data
        assert isinstance(data, UserDeregistered)
        stmt = insert(UserFact).values(user_id=data.user_id, deregistered_at=data.at)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[UserFact.user_id],
                set_={
                    "birth_year": None,
                    "deregistered_at": func.coalesce(UserFact.deregistered_at, stmt.excluded.deregistered_at),
                },
            )
        )

    async def on_eject_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, EjectFailed)
        if data.reason is EjectFailureReason.BANK_FAULTY and data.bank_id:
            await set_banks(session, [bank_row(data.bank_id, "faulty", envelope.occurred_at)], keep_place=True)
        if data.reason in LACK_OF_BANK and data.cabinet_id:
            await session.execute(
                insert(RefusalFact)
                .values(
                    command_id=data.command_id,
                    cabinet_id=data.cabinet_id,
                    reason=data.reason.value,
                    at=envelope.occurred_at,
                )
                .on_conflict_do_nothing()
            )

    async def on_alarm(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DeviceAlarmRaised)
        if data.kind not in FAULT_ALARMS or data.device_kind == "cabinet":
            return
        # A producer from before `device_kind`: only a bank already seen is known to be one.
        if data.device_kind is None and await session.get(BankFact, data.device_id) is None:
            return
        await set_banks(session, [bank_row(data.device_id, "faulty", data.at)], keep_place=True)

    async def on_presence(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DevicePresenceChanged)
        stmt = insert(DevicePresence).values(
            device_id=data.device_id,
            kind=data.device_kind,
            online=data.online,
            last_seen_at=data.last_seen_at or (data.at if data.online else None),
            at=data.at,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[DevicePresence.device_id],
                set_={
                    "online": stmt.excluded.online,
                    "last_seen_at": func.coalesce(stmt.excluded.last_seen_at, DevicePresence.last_seen_at),
                    "at": stmt.excluded.at,
                },
                where=DevicePresence.at < stmt.excluded.at,
            )
        )

    async def on_deposit_paid(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DepositPaid)
        await session.execute(
            insert(DepositFact)
            .values(
                operation_id=data.deposit_id, user_id=data.user_id, kind="pay", amount_fen=data.amount_fen, at=data.at
            )
            .on_conflict_do_nothing()
        )

    async def on_deposit_refund(self, session: AsyncSession, envelope: Envelope) -> None:
        """Requested and refunded, in either order: the refund's fact, with `paid_at` once paid."""
        data = envelope.data
        assert isinstance(data, DepositRefundRequested | DepositRefunded)
        paid_at = data.paid_at if isinstance(data, DepositRefunded) else None
        stmt = insert(DepositFact).values(
            operation_id=data.refund_id,
            user_id=data.user_id,
            kind="refund",
            amount_fen=data.amount_fen,
            at=data.requested_at,
            paid_at=paid_at,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[DepositFact.operation_id],
                set_={"paid_at": func.coalesce(DepositFact.paid_at, stmt.excluded.paid_at)},
            )
        )

    async def on_credit_changed(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, CreditChanged)
        stmt = insert(UserFact).values(
            user_id=data.user_id, credit_level=data.level, deposit_free=data.deposit_free, credit_at=data.at
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[UserFact.user_id],
                set_={
                    "credit_level": stmt.excluded.credit_level,
                    "deposit_free": stmt.excluded.deposit_free,
                    "credit_at": stmt.excluded.credit_at,
                },
                where=or_(UserFact.credit_at.is_(None), UserFact.credit_at < stmt.excluded.credit_at),
            )
        )
