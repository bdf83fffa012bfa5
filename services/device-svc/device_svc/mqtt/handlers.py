"""What device-svc does with each message a device publishes: validate, drop replays, update the
registry and emit events in one transaction, then answer the device after commit."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import (
    BankReturned,
    DeviceMessageRejected,
    DeviceTelemetryReported,
    EventData,
    PresenceReason,
)
from contracts.mqtt import (
    MAX_PAYLOAD_BYTES,
    BankReport,
    EjectResult,
    FirmwareReport,
    Heartbeat,
    Hello,
    Inventory,
    PlayReport,
    ReturnAck,
    ReturnAckResult,
    ReturnReport,
    SlotAbnormal,
    SlotFault,
    SlotState,
    Status,
    UpChannel,
    UpMessage,
    parse_up_topic,
    up_message_adapter,
    up_topic,
)
from contracts.regions import RegionRef, region_at
from device_svc.clock import checked_device_time, ms_to_datetime
from device_svc.commands.service import EjectService
from device_svc.firmware import service as firmware_service
from device_svc.metrics import MESSAGES_FAILED, MESSAGES_RETRIED, messages_received
from device_svc.models import Bank, Cabinet, InboundMessage
from device_svc.mqtt.dispatch import MAX_OUTAGE_DELAY_S, is_outage
from device_svc.mqtt.downlink import Downlink
from device_svc.mqtt.incoming import Incoming, count_rejection
from device_svc.mqtt.intake import Intake, intake_of
from device_svc.presence import transition_events
from device_svc.protocols.base import AdapterRejected, Lookup, ProtocolAdapter
from device_svc.protocols.lookup import DbLookup
from device_svc.protocols.queries import StateQueries
from device_svc.protocols.registry import vendor_route
from device_svc.registry import repository as repo
from device_svc.screens import service as screens_service
from device_svc.telemetry.ingest import TelemetryIngest, TelemetryMessage
from device_svc.telemetry.service import BANK_MESSAGES, BankDevices
from device_svc.telemetry.snapshots import Outcome, SnapshotIngest
from kit.correlation import new_correlation_id, set_correlation_id
from kit.db import after_commit, unit_of_work

log = logging.getLogger(__name__)

Publish = Callable[[AsyncSession, EventData, str], Awaitable[Envelope]]
CHANNELS = frozenset(c.value for c in UpChannel)
# Ingested in batches once they parse (telemetry.ingest; telemetry.snapshots, which leaves what changes
# slots or banks to this module); everything else is one transaction each.
_TELEMETRY_CHANNELS = frozenset((UpChannel.HEARTBEAT.value, UpChannel.BANK_REPORT.value))
BATCHED_CHANNELS = frozenset(
    c.value
    for c in (UpChannel.HEARTBEAT, UpChannel.BANK_REPORT, UpChannel.STATUS, UpChannel.HELLO, UpChannel.INVENTORY)
)


def _region(cabinet: Cabinet) -> RegionRef:
    """A cabinet's division (staff's, when its `region` holds a six-digit code) and H3 cell."""
    return region_at(cabinet.lat, cabinet.lon, cabinet.region)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "", *, emit: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.emit = emit


class MessageProcessor:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish: Publish,
        downlink: Downlink,
        ejects: EjectService,
        *,
        min_battery_pct: int,
        max_clock_skew_s: float,
        banks: BankDevices,
        telemetry: TelemetryIngest,
        snapshots: SnapshotIngest,
        max_concurrency: int = 10,
        critical_concurrency: int = 4,
        lookup: Lookup | None = None,
        firmware: firmware_service.FirmwareContext | None = None,
    ) -> None:
        self._lookup = lookup or DbLookup(sessionmaker)
        self._firmware = firmware
        self._state_queries = StateQueries()
        self._banks = banks
        self._ingest = telemetry
        self._snapshots = snapshots
        # Transactions of message handling at once (the database pool); telemetry waits for its
        # batch without holding one, so a batch can hold a message of every device talking.
        self._limit = asyncio.Semaphore(max_concurrency)
        # The critical intake's messages (eject results, returns) have transactions of their own, so a
        # connect storm's hellos and inventories never make them wait for a database connection.
        self._critical_limit = asyncio.Semaphore(critical_concurrency)
        self._sessionmaker = sessionmaker
        self._publish = publish
        self._downlink = downlink
        self._ejects = ejects
        self._min_battery = min_battery_pct
        self._max_skew = max_clock_skew_s

    async def process(self, topic: str, payload: bytes, received_at: datetime, retained: bool = False) -> None:
        # Each device message starts its own trace (a return's report, charge and inbox message share it);
        # an eject result switches to the trace of the request that caused the eject.
        set_correlation_id(new_correlation_id())
        vendor = vendor_route(topic)
        if vendor is not None:
            await self._translate(vendor[0], vendor[1], topic, payload, received_at)
            return
        await self._process(topic, payload, received_at, retained)

    def take_telemetry(self, topic: str, payload: bytes, received_at: datetime, ack: Callable[[], None]) -> bool:
        """A well-formed heartbeat or bank report of the platform's own protocol goes straight to the
        telemetry batch, without a device lane and a task per message (issue 9); `ack` is called once its
        batch committed. False for anything else (a maker's topic, a malformed or misplaced message): the
        caller hands it to the lanes, where it is refused with the precise reason. Order within a device
        needs no lane here: a batch keeps a device's newest state by device time (telemetry/ingest.py)."""
        if vendor_route(topic) is not None or len(payload) > MAX_PAYLOAD_BYTES:
            return False
        parsed = parse_up_topic(topic)
        if parsed is None or parsed[1] not in _TELEMETRY_CHANNELS:
            return False
        incoming = Incoming(topic, parsed[0], parsed[1], received_at)
        msg = self._parsed(incoming, payload)
        if not isinstance(msg, Heartbeat | BankReport):
            return False
        messages_received(incoming.channel).inc()
        self._submit_telemetry(incoming, msg, new_correlation_id(), ack, 1)
        return True

    def _submit_telemetry(
        self, incoming: Incoming, msg: TelemetryMessage, correlation_id: str, ack: Callable[[], None], attempt: int
    ) -> None:
        def done(future: "asyncio.Future[None]") -> None:
            if future.cancelled():  # shutdown: not acknowledged, the broker sends it again
                return
            exc = future.exception()
            if exc is None:
                ack()
            elif is_outage(exc):
                # As a lane does: unacknowledged while the outage lasts, so the broker keeps what follows.
                MESSAGES_RETRIED.inc()
                delay = min(0.2 * 2 ** min(attempt - 1, 10), MAX_OUTAGE_DELAY_S)
                asyncio.get_running_loop().call_later(
                    delay, self._submit_telemetry, incoming, msg, correlation_id, ack, attempt + 1
                )
            else:  # the batcher already tried it several times: one poison message must not hold a slot
                MESSAGES_FAILED.inc()
                log.error(
                    "telemetry message handling failed; given up",
                    extra={"mqtt_topic": incoming.topic, "error": repr(exc)[:300]},
                )
                ack()

        self._ingest.submit_nowait(incoming, msg, correlation_id).add_done_callback(done)

    async def _translate(
        self, adapter: ProtocolAdapter, device_id: str, topic: str, payload: bytes, received_at: datetime
    ) -> None:
        """A maker's message becomes the platform's own (protocols/), handled as if the cabinet had sent it."""
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise AdapterRejected("oversized", f"{len(payload)} bytes")
            messages = await adapter.decode(device_id, topic, payload, received_at, self._lookup)
        except AdapterRejected as exc:
            await self._reject(device_id, topic, Rejected(exc.reason, exc.detail), received_at)
            return
        for msg in messages:
            own_topic = up_topic(device_id, UpChannel(msg.type))
            await self._process(own_topic, msg.model_dump_json().encode(), received_at, False)
        query = self._state_queries.after(adapter, device_id, messages)
        if query is not None:
            await self._downlink.send_vendor(query)

    async def _process(self, topic: str, payload: bytes, received_at: datetime, retained: bool) -> None:
        parsed = parse_up_topic(topic)
        device_id = parsed[0] if parsed is not None else None
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise Rejected("oversized", f"{len(payload)} bytes")
            if parsed is None or parsed[1] not in CHANNELS:
                raise Rejected("bad_topic")
            incoming = Incoming(topic, parsed[0], parsed[1], received_at)
            messages_received(incoming.channel).inc()
            msg = self._parsed(incoming, payload)
            if isinstance(msg, Heartbeat | BankReport):
                await self._ingest.submit(incoming, msg)
                return
            if isinstance(msg, Status | Hello | Inventory) and (
                await self._snapshots.submit(incoming, msg, retained) is Outcome.DONE
            ):
                return
            limit = self._critical_limit if intake_of(incoming.channel) is Intake.CRITICAL else self._limit
            async with limit:
                outcome = await self._handle(incoming, payload)
            if outcome is not None:
                raise outcome
        except Rejected as rejected:
            await self._reject(device_id, topic, rejected, received_at)

    @staticmethod
    def _parsed(incoming: Incoming, payload: bytes) -> UpMessage | None:
        """A well-formed message of the channel it came on, for the batches (telemetry, state); anything
        else takes the one-by-one path, which refuses it with the precise reason (unknown device first,
        then the payload)."""
        if incoming.channel not in BATCHED_CHANNELS:
            return None
        try:
            msg = up_message_adapter.validate_json(payload)
        except ValidationError:
            return None
        return msg if msg.type == incoming.channel else None

    async def _reject(self, device_id: str | None, topic: str, rejected: Rejected, at: datetime) -> None:
        count_rejection(device_id, topic, rejected.reason, rejected.detail)
        if not rejected.emit:
            return
        event = DeviceMessageRejected(device_id=device_id, mqtt_topic=topic[:200], reason=rejected.reason, at=at)
        async with self._limit, unit_of_work(self._sessionmaker) as session:
            await self._publish(session, event, device_id or "unknown")

    async def _handle(self, incoming: Incoming, payload: bytes) -> Rejected | None:
        """Raises Rejected when nothing may be written; returns one when the transaction must still
        commit (a replay: the repeated ack is sent after commit)."""
        async with unit_of_work(self._sessionmaker) as session:
            cabinet = await repo.get_cabinet(session, incoming.device_id, for_update=True)
            bank: Bank | None = None
            if cabinet is None:
                bank = await repo.get_bank(session, incoming.device_id)
                if bank is None:
                    raise Rejected("unknown_device")
                if bank.state == "retired":
                    raise Rejected("retired_device")
            elif cabinet.state == "retired":
                raise Rejected("retired_device")
            try:
                msg: UpMessage = up_message_adapter.validate_json(payload)
            except ValidationError as exc:
                raise Rejected("invalid_payload", str(exc)) from None
            if msg.type != incoming.channel:
                raise Rejected("invalid_payload", f"a {msg.type} message on the {incoming.channel} channel")
            if bank is not None and not isinstance(msg, BANK_MESSAGES):
                raise Rejected("invalid_payload", f"a bank cannot send {msg.type}")
            if cabinet is not None and isinstance(msg, BankReport):
                raise Rejected("invalid_payload", "a cabinet cannot send bank_report")
            if not isinstance(msg, Status) and not await self._first_time(session, incoming, msg.msg_id):
                if isinstance(msg, ReturnReport):
                    # The device did not get our ack: answer again, change nothing.
                    self._ack_after_commit(session, incoming.device_id, msg.msg_id, ReturnAckResult.DUPLICATE)
                return Rejected("duplicate", f"msg_id {msg.msg_id}", emit=False)
            if bank is not None:
                if isinstance(msg, Status):
                    await self._banks.handle(session, bank, msg, incoming.received_at)
                else:  # a replayed heartbeat or report was dropped above; a new one is batched
                    raise Rejected("invalid_payload", f"{msg.type} outside the telemetry path")
            elif cabinet is not None:
                await self._dispatch(session, cabinet, incoming, msg)
        return None

    async def _first_time(self, session: AsyncSession, incoming: Incoming, msg_id: str) -> bool:
        stmt = (
            insert(InboundMessage)
            .values(device_id=incoming.device_id, msg_id=msg_id, received_at=incoming.received_at)
            .on_conflict_do_nothing()
            .returning(InboundMessage.msg_id)
        )
        return (await session.execute(stmt)).first() is not None

    async def _dispatch(self, session: AsyncSession, cabinet: Cabinet, incoming: Incoming, msg: UpMessage) -> None:
        at = incoming.received_at
        if isinstance(msg, Status):
            if msg.online:
                await self._seen(session, cabinet, at, "status_online", PresenceReason.CONNECT)
            elif cabinet.online:
                cabinet.online = False
                await self._status_changed(session, cabinet, False, at, "last_will", PresenceReason.LAST_WILL)
            return
        reason = PresenceReason.CONNECT if isinstance(msg, Hello) else PresenceReason.MESSAGE
        await self._seen(session, cabinet, at, msg.type, reason)
        if isinstance(msg, Hello | Inventory):
            await self._inventory(session, cabinet, incoming, msg)
        elif isinstance(msg, Heartbeat):  # only when the batch is bypassed (not in normal operation)
            raise Rejected("invalid_payload", "heartbeat outside the telemetry path")
        elif isinstance(msg, EjectResult):
            await self._ejects.on_result(session, cabinet, msg, at)
        elif isinstance(msg, ReturnReport):
            await self._return(session, cabinet, incoming, msg)
        elif isinstance(msg, FirmwareReport):
            if self._firmware is None:
                raise Rejected("invalid_payload", "firmware reports are not handled by this instance")
            await firmware_service.on_report(session, self._firmware, cabinet, msg, at)
        elif isinstance(msg, PlayReport):
            plays = screens_service.plays_reported(cabinet.id, msg, at, max_skew_s=self._max_skew)
            if plays is None:
                raise Rejected("invalid_payload", "a plays period that ends before it starts")
            await self._publish(session, plays, cabinet.id)
        elif isinstance(msg, SlotAbnormal):
            log.warning(
                "slot abnormal",
                extra={"device_id": cabinet.id, "slot": msg.slot, "kind": msg.kind.value},
            )

    async def _seen(
        self, session: AsyncSession, cabinet: Cabinet, at: datetime, why: str, reason: PresenceReason
    ) -> None:
        if cabinet.last_seen_at is None or cabinet.last_seen_at < at:
            cabinet.last_seen_at = at
        if not cabinet.online:
            cabinet.online = True
            await self._status_changed(session, cabinet, True, at, why, reason)

    async def _status_changed(
        self, session: AsyncSession, cabinet: Cabinet, online: bool, at: datetime, why: str, reason: PresenceReason
    ) -> None:
        """Once per transition: the cabinet's row is locked while its message is handled."""
        log.info("cabinet status changed", extra={"device_id": cabinet.id, "online": online, "reason": why})
        for event in transition_events(
            cabinet.id,
            "cabinet",
            online=online,
            reason=reason,
            at=at,
            last_seen_at=cabinet.last_seen_at,
            rssi_dbm=cabinet.rssi_dbm,
            status_reason=why,
        ):
            await self._publish(session, event, cabinet.id)

    async def _telemetry(
        self,
        session: AsyncSession,
        device_id: str,
        device_ms: int,
        received_at: datetime,
        *,
        rssi: int | None = None,
        present: int | None = None,
        rentable: int | None = None,
        region: RegionRef | None = None,
        slots: int | None = None,
    ) -> None:
        reported_at, _ = checked_device_time(device_ms, received_at, not_before=None, max_skew_s=self._max_skew)
        event = DeviceTelemetryReported(
            device_id=device_id,
            reported_at=reported_at,
            received_at=received_at,
            rssi_dbm=rssi,
            banks_present=present,
            banks_rentable=rentable,
            slot_count=slots,
            region=region,
        )
        await self._publish(session, event, device_id)

    async def _inventory(
        self, session: AsyncSession, cabinet: Cabinet, incoming: Incoming, msg: Hello | Inventory
    ) -> None:
        """Make the registry match a cabinet's report of its slots (only the slots it reports).

        Snapshots apply in device-time order: one older than the newest applied (a late or
        redelivered one, or handled by another instance after a newer one) only feeds the data
        team. Within a newer snapshot, a bank that changed after it was taken (ejected, returned,
        set by operations) keeps its newer state and slot."""
        at = incoming.received_at
        reported_at, _ = checked_device_time(msg.ts, at, not_before=None, max_skew_s=self._max_skew)
        if not await repo.advance_inventory_at(session, cabinet.id, reported_at):
            log.info("older slot snapshot ignored", extra={"device_id": cabinet.id, "msg_id": msg.msg_id})
            present = sum(1 for s in msg.slots if s.bank_id is not None)
            await self._telemetry(
                session, cabinet.id, msg.ts, at, present=present, region=_region(cabinet), slots=cabinet.slot_count
            )
            return
        if isinstance(msg, Hello):
            cabinet.firmware = msg.firmware
            cabinet.slot_count = msg.slot_count
        snapshot = {s.slot: s for s in msg.slots if s.slot <= cabinet.slot_count}
        banks = await repo.banks_for_update(
            session, cabinet.id, [s.bank_id for s in snapshot.values() if s.bank_id is not None]
        )
        changed = {
            b
            for b, bank in banks.items()
            if bank.state_changed_at > reported_at and (bank.state == "rented" or bank.cabinet_id is not None)
        }
        # Slots naming a bank that changed since, or now holding one: the registry is newer there.
        busy = {bank.slot_no for b, bank in banks.items() if b in changed and bank.cabinet_id == cabinet.id}
        by_slot = {n: s for n, s in snapshot.items() if n not in busy and s.bank_id not in changed}
        reported = {s.bank_id: s for s in by_slot.values() if s.bank_id is not None}
        for known in banks.values():
            was_here = known.cabinet_id == cabinet.id and known.slot_no in by_slot
            if not was_here or known.id in reported or known.id in changed:
                continue
            log.warning("bank missing from its slot", extra={"device_id": cabinet.id, "bank_id": known.id})
            if await self._ejects.eject_answer_was_lost(session, known, cabinet.id):
                continue  # it left with the user whose eject went unanswered: rented now, not maintenance
            if known.state in ("in_cabinet", "faulty") and not known.operator_hold:
                known.state = "maintenance"
            known.cabinet_id, known.slot_no, known.state_changed_at = None, None, reported_at
        await repo.clear_slots(session, bank_ids=list(reported), cabinet_id=cabinet.id, slot_nos=list(by_slot))
        await repo.upsert_slots(
            session,
            cabinet.id,
            [
                {
                    "slot_no": s.slot,
                    "bank_id": s.bank_id,
                    "fault": s.fault.value if s.fault is not None else None,
                }
                for s in by_slot.values()
            ],
        )
        rentable = 0
        for bank_id, state in reported.items():
            bank = await self._place(
                session, cabinet, banks.get(bank_id), bank_id, state, incoming, msg.msg_id, reported_at
            )
            if bank.state == "in_cabinet" and state.fault is None and (state.battery_pct or 0) >= self._min_battery:
                rentable += 1
        present = sum(1 for s in snapshot.values() if s.bank_id is not None)
        await self._telemetry(
            session,
            cabinet.id,
            msg.ts,
            at,
            present=present,
            rentable=rentable,
            region=_region(cabinet),
            slots=cabinet.slot_count,
        )

    async def _place(
        self,
        session: AsyncSession,
        cabinet: Cabinet,
        bank: Bank | None,
        bank_id: str,
        state: SlotState,
        incoming: Incoming,
        msg_id: str,
        reported_at: datetime,
    ) -> Bank:
        """A bank a snapshot shows in a slot: where it is, its battery, and its state unless that is
        retired or held by operations (maintenance / faulty / lost set by hand)."""
        new_state = "faulty" if state.fault == SlotFault.BANK_ERROR else "in_cabinet"
        if bank is None:
            bank = Bank(id=bank_id, state=new_state, state_changed_at=reported_at)
            session.add(bank)
        elif bank.state == "retired" or bank.operator_hold:
            new_state = bank.state  # kept until operations clear it; the slot is still recorded
        elif bank.state == "rented":
            await self._returned_by_inventory(session, bank, cabinet, state, incoming, msg_id, reported_at)
        if bank.state != new_state or bank.cabinet_id != cabinet.id or bank.slot_no != state.slot:
            bank.state_changed_at = reported_at
        bank.state, bank.cabinet_id, bank.slot_no = new_state, cabinet.id, state.slot
        if state.battery_pct is not None:
            bank.battery_pct = state.battery_pct
        bank.last_report_at = incoming.received_at
        return bank

    async def _returned_by_inventory(
        self,
        session: AsyncSession,
        bank: Bank,
        cabinet: Cabinet,
        state: SlotState,
        incoming: Incoming,
        msg_id: str,
        reported_at: datetime,
    ) -> None:
        """A rented bank shows up in an inventory without a return report: its return was lost.
        Report it so the rental still ends (at the server's time: no device time for it)."""
        event = BankReturned(
            report_id=f"{cabinet.id}/{msg_id}/{state.slot}",
            bank_id=bank.id,
            cabinet_id=cabinet.id,
            slot=state.slot,
            battery_pct=state.battery_pct,
            returned_at=incoming.received_at,
            device_reported_at=reported_at,
            received_at=incoming.received_at,
            clock_adjusted=True,
            region=_region(cabinet),
        )
        log.warning("rented bank found by inventory", extra={"device_id": cabinet.id, "bank_id": bank.id})
        await self._publish(session, event, bank.id)

    async def _return(self, session: AsyncSession, cabinet: Cabinet, incoming: Incoming, msg: ReturnReport) -> None:
        device_id = cabinet.id
        bank = await repo.get_bank(session, msg.bank_id, for_update=True)
        if bank is None:
            self._ack_after_commit(session, device_id, msg.msg_id, ReturnAckResult.UNKNOWN_BANK)
            await self._count_rejection(session, incoming, "unknown_bank", f"bank {msg.bank_id}")
            return
        if msg.slot > cabinet.slot_count:
            self._ack_after_commit(session, device_id, msg.msg_id, ReturnAckResult.SLOT_MISMATCH)
            await self._count_rejection(session, incoming, "slot_mismatch", f"slot {msg.slot}")
            return
        if bank.state != "rented" and bank.cabinet_id == device_id and bank.slot_no == msg.slot:
            self._ack_after_commit(session, device_id, msg.msg_id, ReturnAckResult.DUPLICATE)
            log.info("duplicate return report", extra={"device_id": device_id, "bank_id": bank.id})
            return
        at = incoming.received_at
        returned_at, adjusted = checked_device_time(
            msg.ts, at, not_before=bank.state_changed_at, max_skew_s=self._max_skew
        )
        occupant = (
            await session.execute(
                select(Bank).where(Bank.cabinet_id == device_id, Bank.slot_no == msg.slot, Bank.id != bank.id)
            )
        ).scalar_one_or_none()
        if occupant is not None:
            log.warning("returned into an occupied slot", extra={"device_id": device_id, "bank_id": occupant.id})
            if not occupant.operator_hold and occupant.state != "retired":
                occupant.state = "maintenance"
            occupant.cabinet_id, occupant.slot_no, occupant.state_changed_at = None, None, at
        await repo.clear_slots(session, bank_ids=[bank.id], cabinet_id=device_id, slot_nos=[msg.slot])
        await repo.upsert_slots(session, device_id, [{"slot_no": msg.slot, "bank_id": bank.id, "fault": None}])
        if not bank.operator_hold and bank.state != "retired":
            bank.state = "in_cabinet"  # a held or retired bank keeps its state; the slot is recorded
        bank.cabinet_id, bank.slot_no = device_id, msg.slot
        bank.state_changed_at = returned_at
        bank.last_report_at = at
        if msg.battery_pct is not None:
            bank.battery_pct = msg.battery_pct
        reported = ms_to_datetime(msg.ts) or at
        event = BankReturned(
            report_id=f"{device_id}/{msg.msg_id}",
            bank_id=bank.id,
            cabinet_id=device_id,
            slot=msg.slot,
            battery_pct=msg.battery_pct,
            returned_at=returned_at,
            device_reported_at=reported,
            received_at=at,
            clock_adjusted=adjusted,
            region=_region(cabinet),
        )
        await self._publish(session, event, bank.id)
        self._ack_after_commit(session, device_id, msg.msg_id, ReturnAckResult.OK)
        log.info(
            "bank returned",
            extra={"device_id": device_id, "bank_id": bank.id, "slot": msg.slot, "clock_adjusted": adjusted},
        )

    async def _count_rejection(self, session: AsyncSession, incoming: Incoming, reason: str, detail: str) -> None:
        count_rejection(incoming.device_id, incoming.topic, reason, detail)
        event = DeviceMessageRejected(
            device_id=incoming.device_id, mqtt_topic=incoming.topic, reason=reason, at=incoming.received_at
        )
        await self._publish(session, event, incoming.device_id)

    def _ack_after_commit(self, session: AsyncSession, device_id: str, ref: str, result: ReturnAckResult) -> None:
        ack = ReturnAck(ref_msg_id=ref, result=result)

        async def send() -> None:
            try:
                await self._downlink.send(device_id, ack)
            except Exception as exc:
                # The device repeats its report and gets the ack then.
                log.warning("return ack not sent", extra={"device_id": device_id, "error": repr(exc)})

        after_commit(session, send)
