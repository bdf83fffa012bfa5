"""Eject commands: resolve what the user scanned, refuse at once when no bank can go, otherwise
record a `sent` command and publish the eject after commit. Device results and the deadline
sweeper complete the command; nothing here waits for the device."""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import BankEjected, EjectBank, EjectFailed, EjectFailureReason, EventData
from contracts.mqtt import Eject, EjectResult, EjectResultCode
from contracts.regions import region_at
from device_svc.clock import checked_device_time, datetime_to_ms
from device_svc.commands.rules import BankView, bank_refusal, deadline_passed, failure_reason, pick_best_bank
from device_svc.metrics import COMMANDS_SENT, EJECT_RESULTS
from device_svc.models import Bank, Cabinet, Command, Slot
from device_svc.mqtt.downlink import Downlink
from device_svc.ops import repository as ops_repo
from device_svc.registry import repository as repo
from kit.correlation import get_correlation_id, set_correlation_id
from kit.db import after_commit, unit_of_work
from kit.periodic import Alarm
from kit.tracing import SpanKind, current_traceparent, span

log = logging.getLogger(__name__)

Publish = Callable[[AsyncSession, EventData, str], Awaitable[Envelope]]


@dataclass(frozen=True)
class _Choice:
    bank: BankView | None
    refusal: tuple[EjectFailureReason, str] | None
    cabinet_id: str | None = None  # the scanned cabinet, when no bank was picked from it


class EjectService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish: Publish,
        downlink: Downlink,
        *,
        min_battery_pct: int,
        max_clock_skew_s: float,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publish = publish
        self._downlink = downlink
        self._min_battery = min_battery_pct
        self._max_skew = max_clock_skew_s
        # Rung with each command's deadline once it is committed: the deadline sweeper wakes then, and
        # does not poll the database at rest.
        self.deadlines = Alarm()

    # ---- EjectBank from Kafka ---------------------------------------------------------------

    async def on_eject_bank(self, session: AsyncSession, envelope: Envelope) -> None:
        cmd = envelope.data
        assert isinstance(cmd, EjectBank)
        if await session.get(Command, cmd.command_id) is not None:
            log.info("eject command already handled", extra={"command_id": str(cmd.command_id)})
            return
        now = datetime.now(UTC)
        if deadline_passed(cmd.deadline, now):
            await self._refuse(session, cmd, None, None, EjectFailureReason.COMMAND_EXPIRED, "deadline already passed")
            return
        choice = await self._resolve(session, cmd.code.strip())
        if choice.bank is None or choice.refusal is not None:
            reason, detail = choice.refusal or (EjectFailureReason.UNKNOWN_CODE, "")
            bank = choice.bank
            cabinet_id = bank.cabinet_id if bank else choice.cabinet_id
            await self._refuse(session, cmd, bank.id if bank else None, cabinet_id, reason, detail)
            return
        bank = choice.bank
        assert bank.cabinet_id is not None
        assert bank.slot_no is not None
        command = Command(
            cmd_id=cmd.command_id,
            rental_id=cmd.rental_id,
            user_id=cmd.user_id,
            code=cmd.code,
            cabinet_id=bank.cabinet_id,
            bank_id=bank.id,
            slot=bank.slot_no,
            status="sent",
            deadline=cmd.deadline,
            created_at=now,
            correlation_id=get_correlation_id(),
        )
        session.add(command)
        await session.flush()
        eject = Eject(
            cmd_id=str(cmd.command_id),
            issued_at=datetime_to_ms(now),
            expires_at=datetime_to_ms(cmd.deadline),
            bank_id=bank.id,
            slot=bank.slot_no,
            correlation_id=command.correlation_id,
            traceparent=current_traceparent(),  # the device echoes it: its answer continues this trace
        )
        cabinet_id = bank.cabinet_id

        async def send() -> None:
            self.deadlines.ring_at(cmd.deadline)
            await self._send_eject(cabinet_id, eject, command.cmd_id)

        after_commit(session, send)

    async def _send_eject(self, cabinet_id: str, eject: Eject, cmd_id: UUID) -> None:
        try:
            await self._downlink.send(cabinet_id, eject)
            COMMANDS_SENT.labels("published").inc()
            log.info("eject published", extra={"cmd_id": str(cmd_id), "cabinet_id": cabinet_id, "slot": eject.slot})
        except Exception as exc:
            COMMANDS_SENT.labels("publish_failed").inc()
            log.warning("eject could not be published", extra={"cmd_id": str(cmd_id), "error": repr(exc)})
            async with unit_of_work(self._sessionmaker) as session:
                await self._finish_unanswered(session, [cmd_id], "failed", f"not delivered: {exc!r}"[:200])

    async def _resolve(self, session: AsyncSession, code: str) -> _Choice:
        bank = await repo.get_bank(session, code, for_update=True)
        if bank is None:
            # 6.2.1: a bank is also known by its QR code, NFC tag or Bluetooth address.
            bank = await repo.get_bank_by_identity(session, code, for_update=True)
        if bank is not None:
            view = await self._view(session, bank)
            online = None
            if bank.cabinet_id is not None:
                cabinet = await session.get(Cabinet, bank.cabinet_id)
                online = cabinet.online if cabinet is not None else None
            return _Choice(view, bank_refusal(view, cabinet_online=online, min_battery_pct=self._min_battery))
        cabinet = await repo.get_cabinet(session, code)
        if cabinet is None:
            return _Choice(None, (EjectFailureReason.UNKNOWN_CODE, "no bank or cabinet has this code"))
        if not cabinet.online:
            return _Choice(None, (EjectFailureReason.CABINET_OFFLINE, f"cabinet {cabinet.id} is offline"), cabinet.id)
        rows = (
            await session.execute(
                select(Bank, Slot.fault)
                .join(Slot, (Slot.bank_id == Bank.id) & (Slot.cabinet_id == Bank.cabinet_id), isouter=True)
                .where(Bank.cabinet_id == cabinet.id)
                .order_by(Bank.id)
                .with_for_update(of=Bank)
            )
        ).all()
        pending = set(
            (
                await session.execute(
                    select(Command.bank_id).where(Command.cabinet_id == cabinet.id, Command.status == "sent")
                )
            ).scalars()
        )
        views = [_to_view(b, fault, b.id in pending) for b, fault in rows]
        best = pick_best_bank(views, self._min_battery)
        if best is None:
            reason = (EjectFailureReason.NO_RENTABLE_BANK, f"cabinet {cabinet.id} has no rentable bank")
            return _Choice(None, reason, cabinet.id)
        return _Choice(best, None)

    async def _view(self, session: AsyncSession, bank: Bank) -> BankView:
        fault = None
        if bank.cabinet_id is not None and bank.slot_no is not None:
            slot = await repo.get_slot(session, bank.cabinet_id, bank.slot_no)
            fault = slot.fault if slot is not None and slot.bank_id == bank.id else None
        return _to_view(bank, fault, await repo.has_pending_command(session, bank.id))

    async def _refuse(
        self,
        session: AsyncSession,
        cmd: EjectBank,
        bank_id: str | None,
        cabinet_id: str | None,
        reason: EjectFailureReason,
        detail: str,
    ) -> None:
        log.info(
            "eject refused",
            extra={"command_id": str(cmd.command_id), "code": cmd.code, "reason": reason.value, "detail": detail},
        )
        COMMANDS_SENT.labels(f"refused_{reason.value}").inc()
        failed = EjectFailed(
            command_id=cmd.command_id,
            rental_id=cmd.rental_id,
            bank_id=bank_id,
            cabinet_id=cabinet_id,
            reason=reason,
            detail=detail,
        )
        await self._publish(session, failed, cabinet_id or cmd.code)

    # ---- ejects for maintenance (staff, ops/) -------------------------------------------------

    async def eject_for_maintenance(
        self, session: AsyncSession, bank: Bank, cabinet: Cabinet, reason: str, actor: str, deadline: datetime
    ) -> Command:
        """Send the cabinet an ordinary eject for the bank, with no rental: when the cabinet answers ok the
        bank leaves its slot in maintenance (held), with the reason in its transitions; no event for billing.
        The caller has checked that the bank sits in this cabinet, which is online."""
        assert bank.slot_no is not None
        now = datetime.now(UTC)
        command = Command(
            cmd_id=uuid4(),
            rental_id=None,
            user_id=None,
            code=bank.id,
            cabinet_id=cabinet.id,
            bank_id=bank.id,
            slot=bank.slot_no,
            status="sent",
            deadline=deadline,
            created_at=now,
            correlation_id=get_correlation_id(),
            maintenance_reason=reason,
            requested_by=actor,
        )
        session.add(command)
        await session.flush()
        eject = Eject(
            cmd_id=str(command.cmd_id),
            issued_at=datetime_to_ms(now),
            expires_at=datetime_to_ms(deadline),
            bank_id=bank.id,
            slot=bank.slot_no,
            correlation_id=command.correlation_id,
            traceparent=current_traceparent(),
        )

        async def send() -> None:
            self.deadlines.ring_at(deadline)
            await self._send_eject(cabinet.id, eject, command.cmd_id)

        after_commit(session, send)
        return command

    async def _ejected_for_maintenance(self, session: AsyncSession, command: Command, received_at: datetime) -> None:
        bank = await repo.get_bank(session, command.bank_id, for_update=True)
        await repo.empty_slot_of_bank(session, command.bank_id)
        if bank is None:
            return
        reason = f"ejected for maintenance: {command.maintenance_reason} (by {command.requested_by})"
        await ops_repo.set_transition_reason(session, reason)
        bank.state = "maintenance"
        bank.operator_hold = True
        bank.cabinet_id = None
        bank.slot_no = None
        bank.state_changed_at = received_at
        log.info("bank ejected for maintenance", extra={"cmd_id": str(command.cmd_id), "bank_id": command.bank_id})

    # ---- results from devices ---------------------------------------------------------------

    async def on_result(self, session: AsyncSession, cabinet: Cabinet, msg: EjectResult, received_at: datetime) -> None:
        attributes = {
            "messaging.system": "mqtt",
            "pb.device_id": cabinet.id,
            "pb.cmd_id": msg.cmd_id,
            "pb.eject.result": msg.result.value,
        }
        with span("device eject_result", kind=SpanKind.CONSUMER, parent=msg.traceparent, attributes=attributes):
            await self._on_result(session, cabinet, msg, received_at)

    async def _on_result(
        self, session: AsyncSession, cabinet: Cabinet, msg: EjectResult, received_at: datetime
    ) -> None:
        try:
            cmd_id = UUID(msg.cmd_id)
        except ValueError:
            cmd_id = None
        command = None
        if cmd_id is not None:
            command = (
                await session.execute(select(Command).where(Command.cmd_id == cmd_id).with_for_update())
            ).scalar_one_or_none()
        if command is None or command.cabinet_id != cabinet.id:
            EJECT_RESULTS.labels("unmatched").inc()
            log.warning(
                "eject result for no command of this cabinet",
                extra={"device_id": cabinet.id, "cmd_id": msg.cmd_id, "result": msg.result.value},
            )
            return
        if command.correlation_id is not None:
            set_correlation_id(command.correlation_id)  # the answer continues the request's trace
        ok = msg.result == EjectResultCode.OK
        if command.status != "sent":
            EJECT_RESULTS.labels("late").inc()
            log.warning(
                "eject result for a command that is already final",
                extra={"cmd_id": msg.cmd_id, "status": command.status, "result": msg.result.value},
            )
            if ok and command.status != "succeeded":
                # The bank did leave after we reported a failure: say so, billing compensates.
                command.result = "ok_after_final"
                if command.rental_id is None:
                    await self._ejected_for_maintenance(session, command, received_at)
                else:
                    await self._ejected(session, command, msg, received_at)
            return
        EJECT_RESULTS.labels(msg.result.value).inc()
        command.completed_at = received_at
        command.result = msg.result.value
        if ok:
            command.status = "succeeded"
            if command.rental_id is None:
                await self._ejected_for_maintenance(session, command, received_at)
            else:
                await self._ejected(session, command, msg, received_at)
            return
        if msg.result == EjectResultCode.BANK_NOT_PRESENT:
            # The slot is empty: an earlier eject of this bank whose answer was lost may explain it.
            bank = await repo.get_bank(session, command.bank_id, for_update=True)
            if bank is not None:
                await self.eject_answer_was_lost(session, bank, command.cabinet_id)
        command.status = "failed"
        if command.rental_id is None:
            log.info("eject for maintenance failed", extra={"cmd_id": msg.cmd_id, "result": msg.result.value})
            return
        failed = EjectFailed(
            command_id=command.cmd_id,
            rental_id=command.rental_id,
            bank_id=command.bank_id,
            cabinet_id=command.cabinet_id,
            reason=failure_reason(msg.result),
            detail=f"device answered {msg.result.value}",
        )
        await self._publish(session, failed, command.cabinet_id)

    async def _ejected(self, session: AsyncSession, command: Command, msg: EjectResult, received_at: datetime) -> None:
        ejected_at, adjusted = checked_device_time(
            msg.ts, received_at, not_before=command.created_at, max_skew_s=self._max_skew
        )
        await self._announce_ejected(session, command, ejected_at, clock_adjusted=adjusted)

    async def eject_answer_was_lost(self, session: AsyncSession, bank: Bank, cabinet_id: str) -> bool:
        """`bank` is missing from its slot in `cabinet_id` (the cabinet's snapshot says so, or a later eject of it
        answered `bank_not_present`). If the last eject of it from there was never answered (expired with no
        answer) and the bank has not moved since, that eject happened and its answer was lost (a lost ack, issue
        14): it is reported as the late eject it is (`ok_inferred`, at the time it was sent), so billing makes the
        failed rental active again, free of charge, and the user sees the bank they hold. True when it was."""
        if bank.state != "in_cabinet" or bank.cabinet_id != cabinet_id:
            return False
        command = (
            await session.execute(
                select(Command)
                .where(Command.bank_id == bank.id, Command.cabinet_id == cabinet_id, Command.status != "sent")
                .order_by(Command.created_at.desc())
                .limit(1)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if (
            command is None
            or command.status != "expired"
            or command.result != "no_answer"
            or command.rental_id is None
            or command.slot != bank.slot_no
            or bank.state_changed_at > command.created_at  # it moved since (returned, set by operations)
        ):
            return False
        log.warning(
            "an unanswered eject did happen: the bank is gone from its slot; reported as a late eject",
            extra={"cmd_id": str(command.cmd_id), "bank_id": bank.id, "cabinet_id": cabinet_id},
        )
        EJECT_RESULTS.labels("ok_inferred").inc()
        command.result = "ok_inferred"
        await self._announce_ejected(session, command, command.created_at, clock_adjusted=True)
        return True

    async def _announce_ejected(
        self, session: AsyncSession, command: Command, ejected_at: datetime, *, clock_adjusted: bool
    ) -> None:
        assert command.rental_id is not None
        adjusted = clock_adjusted
        bank = await repo.get_bank(session, command.bank_id, for_update=True)
        battery = 0
        model = None
        attributes: dict[str, Any] = {}
        if bank is not None:
            battery = bank.battery_pct or 0
            model = bank.model
            attributes = {
                "bank_in_service_at": bank.in_service_at,
                "bank_charge_cycles": bank.charge_cycles,
                "bank_health_pct": bank.health_pct,
            }
            bank.state = "rented"
            bank.cabinet_id = None
            bank.slot_no = None
            bank.state_changed_at = ejected_at
        await repo.empty_slot_of_bank(session, command.bank_id)
        cabinet = await repo.get_cabinet(session, command.cabinet_id)
        event = BankEjected(
            command_id=command.cmd_id,
            rental_id=command.rental_id,
            bank_id=command.bank_id,
            cabinet_id=command.cabinet_id,
            slot=command.slot,
            battery_pct=battery,
            ejected_at=ejected_at,
            bank_model=model,
            **attributes,
            region=region_at(cabinet.lat, cabinet.lon, cabinet.region) if cabinet else None,
        )
        await self._publish(session, event, command.cabinet_id)
        log.info(
            "bank ejected",
            extra={"cmd_id": str(command.cmd_id), "bank_id": command.bank_id, "clock_adjusted": adjusted},
        )

    # ---- deadlines -------------------------------------------------------------------------

    async def sweep_deadlines(self, now: datetime | None = None, limit: int = 200) -> int:
        """Fail every `sent` command past its deadline with device_no_answer."""
        now = now or datetime.now(UTC)
        async with unit_of_work(self._sessionmaker) as session:
            ids = list(
                (
                    await session.execute(
                        select(Command.cmd_id)
                        .where(Command.status == "sent", Command.deadline < now)
                        .order_by(Command.deadline)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if ids:
                await self._finish_unanswered(session, ids, "expired", "no answer before the deadline")
        return len(ids)

    async def next_deadline(self) -> datetime | None:
        """The earliest deadline of a command still waiting for its device."""
        async with self._sessionmaker() as session:
            stmt = select(func.min(Command.deadline)).where(Command.status == "sent")
            return (await session.execute(stmt)).scalar_one_or_none()

    async def _finish_unanswered(self, session: AsyncSession, ids: list[UUID], status: str, detail: str) -> None:
        rows = (
            await session.execute(
                update(Command)
                .where(Command.cmd_id.in_(ids), Command.status == "sent")
                .values(status=status, result="no_answer", completed_at=datetime.now(UTC))
                .returning(
                    Command.cmd_id, Command.rental_id, Command.bank_id, Command.cabinet_id, Command.correlation_id
                ),
                execution_options={"synchronize_session": False},
            )
        ).all()
        for row in rows:
            set_correlation_id(row.correlation_id)
            EJECT_RESULTS.labels("no_answer").inc()
            if row.rental_id is None:
                continue  # an eject for maintenance: nobody waits for it but the staff member's page
            failed = EjectFailed(
                command_id=row.cmd_id,
                rental_id=row.rental_id,
                bank_id=row.bank_id,
                cabinet_id=row.cabinet_id,
                reason=EjectFailureReason.DEVICE_NO_ANSWER,
                detail=detail,
            )
            await self._publish(session, failed, row.cabinet_id)


def _to_view(bank: Bank, slot_fault: str | None, pending: bool) -> BankView:
    return BankView(
        id=bank.id,
        state=bank.state,
        battery_pct=bank.battery_pct,
        cabinet_id=bank.cabinet_id,
        slot_no=bank.slot_no,
        slot_fault=slot_fault,
        pending_command=pending,
        reported_fault=bank.reported_fault_at is not None,
    )
