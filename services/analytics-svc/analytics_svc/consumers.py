"""Domain events into facts. The kit records each event id in the same transaction (a redelivered
event is a no-op); the unique business keys (rental id, user id, cabinet + report id, bank id) make
each handler idempotent on its own, for copies that carry another event id.

Order is event time, never arrival: a state or region is replaced only by a newer one
(`WHERE stored.at < new.at`), and every rental fact change marks the UTC hour it started in
dirty, so the hourly rollup is rebuilt from the facts for exactly that hour (late events land in
their own bucket, duplicates leave it unchanged)."""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics_svc.models import (
    BankFact,
    CabinetRegion,
    DepositFact,
    DevicePresence,
    RefusalFact,
    RentalFact,
    ReturnFact,
    RollupDirtyHour,
    UserDay,
    UserFact,
)
from contracts import Envelope
from contracts.events import (
    BankEjected,
    BankReturned,
    CreditChanged,
    DepositPaid,
    DepositRefunded,
    DepositRefundRequested,
    DeviceAlarmKind,
    DeviceAlarmRaised,
    DevicePresenceChanged,
    DeviceTelemetryReported,
    EjectFailed,
    EjectFailureReason,
    RentalEnded,
    RentalStarted,
    UserRegistered,
)
from contracts.regions import RegionRef
from kit.kafka import Handler

FAULT_ALARMS = frozenset({DeviceAlarmKind.HIGH_TEMPERATURE})
# Refused scans that count as unmet demand in hotspots: the scanned cabinet had no bank to lend.
LACK_OF_BANK = frozenset({EjectFailureReason.NO_RENTABLE_BANK})


async def _mark_dirty(session: AsyncSession, started_at: datetime) -> None:
    hour = func.date_trunc("hour", started_at)
    await session.execute(insert(RollupDirtyHour).values(hour=hour).on_conflict_do_nothing())


async def _remember_region(session: AsyncSession, cabinet_id: str, region: RegionRef | None, at: datetime) -> None:
    if region is None:
        return
    stmt = insert(CabinetRegion).values(
        cabinet_id=cabinet_id, division=region.division_code, cell=region.cell, as_of=at
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[CabinetRegion.cabinet_id],
            set_={"division": stmt.excluded.division, "cell": stmt.excluded.cell, "as_of": stmt.excluded.as_of},
            where=CabinetRegion.as_of < stmt.excluded.as_of,
        )
    )


async def _cabinet_region(session: AsyncSession, cabinet_id: str) -> CabinetRegion | None:
    return await session.get(CabinetRegion, cabinet_id)


async def _set_bank(
    session: AsyncSession,
    bank_id: str,
    state: str,
    at: datetime,
    *,
    cabinet_id: str | None = None,
    region: RegionRef | None = None,
    model: str | None = None,
    keep_place: bool = False,
) -> None:
    """The bank's state, unless a newer one is stored. `keep_place`: a fault changes the state only."""
    values = {
        "bank_id": bank_id,
        "state": state,
        "state_at": at,
        "cabinet_id": cabinet_id,
        "division": region.division_code if region else None,
        "cell": region.cell if region else None,
        "model": model,
    }
    stmt = insert(BankFact).values(**values)
    changes: dict[str, Any] = {"state": stmt.excluded.state, "state_at": stmt.excluded.state_at}
    if not keep_place:
        changes |= {"cabinet_id": stmt.excluded.cabinet_id, "division": stmt.excluded.division}
        changes |= {"cell": stmt.excluded.cell}
    changes["model"] = func.coalesce(stmt.excluded.model, BankFact.model)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[BankFact.bank_id], set_=changes, where=BankFact.state_at <= stmt.excluded.state_at
        )
    )


async def _bank_attributes(
    session: AsyncSession,
    bank_id: str,
    at: datetime,
    *,
    in_service_at: datetime | None = None,
    cycles: int | None = None,
    health: int | None = None,
) -> None:
    """A known bank's time in service (first known wins) and battery figures (a newer reading wins)."""
    if in_service_at is not None:
        await session.execute(
            update(BankFact)
            .where(BankFact.bank_id == bank_id, BankFact.in_service_at.is_(None))
            .values(in_service_at=in_service_at)
        )
    if cycles is None and health is None:
        return
    await session.execute(
        update(BankFact)
        .where(BankFact.bank_id == bank_id, or_(BankFact.health_at.is_(None), BankFact.health_at < at))
        .values(
            charge_cycles=func.coalesce(cycles, BankFact.charge_cycles),
            health_pct=func.coalesce(health, BankFact.health_pct),
            health_at=at,
        )
    )


class Ingest:
    """The handlers, with the time zone active-user days are counted in."""

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone

    def handlers(self) -> dict[str, Handler]:
        return {
            "user.user.registered": self.on_user_registered,
            "billing.rental.started": self.on_rental_started,
            "billing.rental.ended": self.on_rental_ended,
            "device.bank.ejected": self.on_bank_ejected,
            "device.eject.failed": self.on_eject_failed,
            "device.bank.returned": self.on_bank_returned,
            "device.telemetry.reported": self.on_telemetry,
            "device.alarm.raised": self.on_alarm,
            "device.presence.changed": self.on_presence,
            "asset.deposit.paid": self.on_deposit_paid,
            "asset.deposit.refund_requested": self.on_deposit_refund,
            "asset.deposit.refunded": self.on_deposit_refund,
            "asset.credit.changed": self.on_credit_changed,
        }

    async def on_user_registered(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, UserRegistered)
        stmt = insert(UserFact).values(user_id=data.user_id, registered_at=data.registered_at)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[UserFact.user_id],
                set_={"registered_at": stmt.excluded.registered_at},
                where=UserFact.registered_at.is_(None),
            )
        )

    async def _user_active(self, session: AsyncSession, data: RentalStarted, division: str | None) -> None:
        stmt = insert(UserFact).values(user_id=data.user_id, first_rental_at=data.started_at)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[UserFact.user_id],
                set_={"first_rental_at": func.least(UserFact.first_rental_at, stmt.excluded.first_rental_at)},
            )
        )
        day = data.started_at.astimezone(self._zone).date()
        await session.execute(
            insert(UserDay).values(day=day, user_id=data.user_id, division=division or "").on_conflict_do_nothing()
        )

    async def on_rental_started(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, RentalStarted)
        known = await _cabinet_region(session, data.cabinet_id)
        stmt = insert(RentalFact).values(
            rental_id=data.rental_id,
            user_id=data.user_id,
            bank_id=data.bank_id,
            cabinet_id=data.cabinet_id,
            slot=data.slot,
            started_at=data.started_at,
            start_division=known.division if known else None,
            start_cell=known.cell if known else None,
        )
        # If `ended` was applied first, the fact exists already; the slot and a region are new.
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[RentalFact.rental_id],
                set_={
                    "slot": stmt.excluded.slot,
                    "start_division": func.coalesce(RentalFact.start_division, stmt.excluded.start_division),
                    "start_cell": func.coalesce(RentalFact.start_cell, stmt.excluded.start_cell),
                },
            )
        )
        fact = await session.get(RentalFact, data.rental_id, populate_existing=True)
        await self._user_active(session, data, fact.start_division if fact else None)
        await _mark_dirty(session, data.started_at)

    async def on_rental_ended(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, RentalEnded)
        start = await _cabinet_region(session, data.start_cabinet_id)
        back = await _cabinet_region(session, data.return_cabinet_id)
        stmt = insert(RentalFact).values(
            rental_id=data.rental_id,
            user_id=data.user_id,
            bank_id=data.bank_id,
            cabinet_id=data.start_cabinet_id,
            started_at=data.started_at,
            ended_at=data.ended_at,
            return_cabinet_id=data.return_cabinet_id,
            duration_seconds=data.duration_seconds,
            fee_fen=data.fee_fen,
            purchased=data.purchased,
            start_division=start.division if start else None,
            start_cell=start.cell if start else None,
            return_division=None if data.purchased or back is None else back.division,
            return_cell=None if data.purchased or back is None else back.cell,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[RentalFact.rental_id],
                set_={
                    "ended_at": stmt.excluded.ended_at,
                    "return_cabinet_id": stmt.excluded.return_cabinet_id,
                    "duration_seconds": stmt.excluded.duration_seconds,
                    "fee_fen": stmt.excluded.fee_fen,
                    "purchased": stmt.excluded.purchased,
                    "start_division": func.coalesce(RentalFact.start_division, stmt.excluded.start_division),
                    "start_cell": func.coalesce(RentalFact.start_cell, stmt.excluded.start_cell),
                    "return_division": func.coalesce(RentalFact.return_division, stmt.excluded.return_division),
                    "return_cell": func.coalesce(RentalFact.return_cell, stmt.excluded.return_cell),
                },
            )
        )
        if data.purchased:
            await _set_bank(session, data.bank_id, "lost", data.ended_at)
        await _mark_dirty(session, data.started_at)

    async def on_bank_ejected(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, BankEjected)
        await _remember_region(session, data.cabinet_id, data.region, data.ejected_at)
        await _set_bank(
            session,
            data.bank_id,
            "rented",
            data.ejected_at,
            cabinet_id=data.cabinet_id,
            region=data.region,
            model=data.bank_model,
        )
        await _bank_attributes(
            session,
            data.bank_id,
            data.ejected_at,
            in_service_at=data.bank_in_service_at,
            cycles=data.bank_charge_cycles,
            health=data.bank_health_pct,
        )
        if data.region is None:
            return
        started = (
            await session.execute(
                update(RentalFact)
                .where(RentalFact.rental_id == data.rental_id)
                .values(start_division=data.region.division_code, start_cell=data.region.cell)
                .returning(RentalFact.started_at, RentalFact.user_id)
            )
        ).one_or_none()
        if started is not None:
            day = started.started_at.astimezone(self._zone).date()
            division = data.region.division_code or ""
            await session.execute(
                insert(UserDay).values(day=day, user_id=started.user_id, division=division).on_conflict_do_nothing()
            )
            if division:  # the day was counted under an unknown division before the region arrived
                await session.execute(
                    delete(UserDay).where(
                        UserDay.day == day, UserDay.user_id == started.user_id, UserDay.division == ""
                    )
                )
            await _mark_dirty(session, started.started_at)

    async def on_eject_failed(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, EjectFailed)
        if data.reason is EjectFailureReason.BANK_FAULTY and data.bank_id:
            await _set_bank(session, data.bank_id, "faulty", envelope.occurred_at, keep_place=True)
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

    async def on_bank_returned(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, BankReturned)
        region = data.region
        await session.execute(
            insert(ReturnFact)
            .values(
                report_id=data.report_id,
                bank_id=data.bank_id,
                cabinet_id=data.cabinet_id,
                slot=data.slot,
                battery_pct=data.battery_pct,
                returned_at=data.returned_at,
                clock_adjusted=data.clock_adjusted,
                division=region.division_code if region else None,
                cell=region.cell if region else None,
            )
            .on_conflict_do_nothing(constraint="uq_return_facts_cabinet_report")
        )
        await _remember_region(session, data.cabinet_id, region, data.returned_at)
        await _set_bank(
            session, data.bank_id, "in_cabinet", data.returned_at, cabinet_id=data.cabinet_id, region=region
        )
        if region is None:
            return
        # The rental this return ended, if `billing.rental.ended` came first without the region.
        fixed = await session.execute(
            update(RentalFact)
            .where(
                RentalFact.bank_id == data.bank_id,
                RentalFact.return_cabinet_id == data.cabinet_id,
                RentalFact.return_division.is_(None),
                or_(RentalFact.ended_at.is_(None), RentalFact.ended_at <= data.returned_at),
                RentalFact.started_at <= data.returned_at,
            )
            .values(return_division=region.division_code, return_cell=region.cell)
            .returning(RentalFact.started_at)
        )
        for (started_at,) in fixed.all():
            await _mark_dirty(session, started_at)

    async def on_telemetry(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DeviceTelemetryReported)
        if data.device_kind == "bank":
            if data.charge_cycles is not None or data.health_pct is not None:
                await _bank_attributes(
                    session, data.device_id, data.reported_at, cycles=data.charge_cycles, health=data.health_pct
                )
            return
        if data.banks_present is None:
            return  # heartbeats carry no stock
        await _remember_region(session, data.device_id, data.region, data.reported_at)
        stmt = insert(CabinetRegion).values(
            cabinet_id=data.device_id,
            as_of=data.reported_at,
            banks_present=data.banks_present,
            banks_rentable=data.banks_rentable,
            slot_count=data.slot_count,
            stock_at=data.reported_at,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[CabinetRegion.cabinet_id],
                set_={
                    "banks_present": stmt.excluded.banks_present,
                    "banks_rentable": stmt.excluded.banks_rentable,
                    "slot_count": func.coalesce(stmt.excluded.slot_count, CabinetRegion.slot_count),
                    "stock_at": stmt.excluded.stock_at,
                },
                where=or_(CabinetRegion.stock_at.is_(None), CabinetRegion.stock_at < stmt.excluded.stock_at),
            )
        )

    async def on_alarm(self, session: AsyncSession, envelope: Envelope) -> None:
        data = envelope.data
        assert isinstance(data, DeviceAlarmRaised)
        if data.kind in FAULT_ALARMS and await session.get(BankFact, data.device_id) is not None:
            await _set_bank(session, data.device_id, "faulty", data.at, keep_place=True)

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
