"""Firmware images and rollouts: upload (checked, signed), choose the cabinets, start a few at a time,
follow each cabinet's reports, time out the silent ones, halt on failures. Every state change goes through
`lifecycle` and is an event on device.firmware.v1 in the same transaction."""

import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import Envelope
from contracts.events import (
    EventData,
    FirmwareRolloutChanged,
    FirmwareRolloutState,
    FirmwareUpdateChanged,
    FirmwareUpdateState,
)
from contracts.mqtt import FirmwareReport, FirmwareUpdate
from contracts.regions import region_at, targets
from device_svc.clock import datetime_to_ms
from device_svc.firmware import repository as repo
from device_svc.firmware.lifecycle import (
    ACTIVE,
    FAILURES,
    FINISHED,
    OPEN_ROLLOUTS,
    RolloutAction,
    UpdateAction,
    action_of,
    rollout_next,
    update_next,
)
from device_svc.firmware.schemas import RolloutIn, RolloutOut, UpdateOut
from device_svc.firmware.signing import DownloadLinks, sha256_hex, sign_image
from device_svc.metrics import COMMANDS_DOWN
from device_svc.models import Cabinet, FirmwareImage, FirmwareRollout
from device_svc.models import FirmwareUpdate as UpdateRow
from device_svc.mqtt.downlink import Downlink
from kit.db import unit_of_work
from kit.errors import BusinessError, Conflict, NotFound
from kit.periodic import Alarm

log = logging.getLogger(__name__)

Publish = Callable[[AsyncSession, EventData, str], Awaitable[Envelope]]
U = FirmwareUpdateState
R = FirmwareRolloutState


class SigningKeyMissing(BusinessError):
    status = 503
    code = "firmware_signing_unavailable"
    title = "No firmware signing key is configured (FIRMWARE_SIGNING_KEY_FILE)"


class EmptyImage(BusinessError):
    status = 422
    code = "empty_image"
    title = "The firmware image is empty"


class ChecksumMismatch(BusinessError):
    status = 422
    code = "checksum_mismatch"
    title = "The image's SHA-256 is not the checksum given"


class VersionExists(Conflict):
    code = "firmware_version_exists"
    title = "An image of this model and version exists already"


class ImageNotFound(NotFound):
    code = "firmware_image_not_found"
    title = "No such firmware image"


class RolloutNotFound(NotFound):
    code = "rollout_not_found"
    title = "No such firmware rollout"


class NoTargetCabinets(BusinessError):
    status = 422
    code = "no_target_cabinets"
    title = "No cabinet of the image's model matches the rollout's target"


@dataclass
class FirmwareContext:
    """What the firmware feature needs at run time (built in main.py's lifespan)."""

    publish: Publish
    links: DownloadLinks
    signing_key: Ed25519PrivateKey | None
    stage_timeout_s: float
    sweep: Alarm = field(default_factory=Alarm)

    def ring(self, now: datetime) -> None:
        self.sweep.ring_at(now)


# ------------------------------------------------------------------ images


async def upload(
    session: AsyncSession,
    ctx: FirmwareContext,
    *,
    model: str,
    version: str,
    claimed_sha256: str | None,
    notes: str,
    data: bytes,
    by: str,
    now: datetime,
) -> FirmwareImage:
    if ctx.signing_key is None:
        raise SigningKeyMissing()
    if not data:
        raise EmptyImage()
    digest = sha256_hex(data)
    if claimed_sha256 is not None and claimed_sha256.lower() != digest:
        raise ChecksumMismatch(f"The image's SHA-256 is {digest}", sha256=digest)
    image = FirmwareImage(
        id=uuid.uuid4(),
        model=model,
        version=version,
        size=len(data),
        sha256=digest,
        signature=sign_image(ctx.signing_key, model, version, digest),
        data=data,
        notes=notes,
        uploaded_by=by,
        created_at=now,
    )
    if not await repo.add_image(session, image):
        raise VersionExists(f"{model} {version} was uploaded already", model=model, version=version)
    log.info("firmware image uploaded", extra={"model": model, "version": version, "size": len(data), "by": by})
    return image


# ------------------------------------------------------------------ rollouts


def rollout_order(cabinet_id: str) -> int:
    """A cabinet's place in every rollout (a stable hash of its id): a 10 % rollout and a later 50 % one
    start with the same cabinets."""
    return int.from_bytes(hashlib.sha256(cabinet_id.encode()).digest()[:4], "big") >> 1


def choose(cabinets: list[Any], percent: int, region: str | None) -> list[tuple[int, str]]:
    """(order, id) of the cabinets a rollout takes: those in the region (their division, set by staff or from
    their position), then the first `percent` of them (rounded half up, at least one) in rollout order."""
    inside = [
        c for c in cabinets if region is None or targets([region], region_at(c.lat, c.lon, c.region).division_code)
    ]
    ordered = sorted((rollout_order(c.id), c.id) for c in inside)
    take = max(1, (len(ordered) * percent + 50) // 100) if ordered else 0
    return ordered[:take]


def _counts(raw: dict[str, int]) -> dict[FirmwareUpdateState, int]:
    return {U(state): count for state, count in sorted(raw.items())}


def rollout_out(rollout: FirmwareRollout, counts: dict[str, int], updates: list[UpdateRow] | None = None) -> RolloutOut:
    return RolloutOut(
        rollout_id=rollout.id,
        image_id=rollout.image_id,
        model=rollout.model,
        version=rollout.version,
        state=R(rollout.state),
        percent=rollout.target_percent,
        region=rollout.target_region,
        batch_size=rollout.batch_size,
        max_failures=rollout.max_failures,
        max_failure_pct=rollout.max_failure_pct,
        reason=rollout.reason,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        counts=_counts(counts),
        cabinets=[
            UpdateOut(
                cabinet_id=u.cabinet_id,
                state=U(u.state),
                from_version=u.from_version,
                progress_pct=u.progress_pct,
                error=u.error,
                sent_at=u.sent_at,
                updated_at=u.updated_at,
            )
            for u in updates or []
        ],
    )


async def _rollout_event(
    session: AsyncSession,
    ctx: FirmwareContext,
    rollout: FirmwareRollout,
    before: R | None,
    action: str,
    by: str,
    now: datetime,
) -> dict[str, int]:
    await session.flush()
    counts = (await repo.counts(session, [rollout.id]))[rollout.id]
    event = FirmwareRolloutChanged(
        rollout_id=rollout.id,
        model=rollout.model,
        version=rollout.version,
        from_state=before,
        to_state=R(rollout.state),
        action=action,
        by=by[:100],
        reason=rollout.reason,
        counts=_counts(counts),
        at=now,
    )
    await ctx.publish(session, event, str(rollout.id))
    return counts


async def _move_rollout(
    session: AsyncSession,
    ctx: FirmwareContext,
    rollout: FirmwareRollout,
    action: RolloutAction,
    by: str,
    now: datetime,
    reason: str = "",
) -> dict[str, int]:
    before = R(rollout.state)
    rollout.state = rollout_next(before, action).value
    rollout.updated_at = now
    if reason:
        rollout.reason = reason[:300]
    log.info(
        "firmware rollout changed",
        extra={"rollout_id": str(rollout.id), "from": before.value, "to": rollout.state, "by": by, "reason": reason},
    )
    return await _rollout_event(session, ctx, rollout, before, action.value, by, now)


async def create_rollout(
    session: AsyncSession, ctx: FirmwareContext, body: RolloutIn, by: str, now: datetime
) -> RolloutOut:
    image = await repo.get_image(session, body.image_id)
    if image is None:
        raise ImageNotFound(f"No firmware image {body.image_id}")
    chosen = choose(await repo.model_cabinets(session, image.model), body.percent, body.region)
    if not chosen:
        raise NoTargetCabinets(f"No {image.model} cabinet matches", model=image.model, region=body.region)
    rollout = FirmwareRollout(
        id=uuid.uuid4(),
        image_id=image.id,
        model=image.model,
        version=image.version,
        state=R.RUNNING.value,
        target_percent=body.percent,
        target_region=body.region,
        batch_size=body.batch_size,
        max_failures=body.max_failures,
        max_failure_pct=body.max_failure_pct,
        created_by=by,
        created_at=now,
        updated_at=now,
    )
    repo.add_rollout(session, rollout, chosen, now)
    counts = await _rollout_event(session, ctx, rollout, None, "create", by, now)
    log.info("firmware rollout created", extra={"rollout_id": str(rollout.id), "cabinets": len(chosen), "by": by})
    return rollout_out(rollout, counts)


async def get_rollout(session: AsyncSession, rollout_id: UUID, limit: int) -> RolloutOut:
    rollout = await repo.get_rollout(session, rollout_id)
    if rollout is None:
        raise RolloutNotFound(f"No firmware rollout {rollout_id}")
    counts = (await repo.counts(session, [rollout_id]))[rollout_id]
    return rollout_out(rollout, counts, await repo.updates_of(session, rollout_id, limit))


async def list_rollouts(session: AsyncSession, limit: int) -> list[RolloutOut]:
    rollouts = await repo.list_rollouts(session, limit)
    counts = await repo.counts(session, [r.id for r in rollouts])
    return [rollout_out(r, counts[r.id]) for r in rollouts]


async def act(
    session: AsyncSession,
    ctx: FirmwareContext,
    rollout_id: UUID,
    action: RolloutAction,
    by: str,
    reason: str,
    now: datetime,
) -> tuple[R, RolloutOut]:
    """An operator pauses, resumes or cancels a rollout; returns the state it had. A cancelled rollout's
    cabinets not yet sent the update are cancelled; those updating finish and are recorded."""
    rollout = await repo.get_rollout(session, rollout_id, for_update=True)
    if rollout is None:
        raise RolloutNotFound(f"No firmware rollout {rollout_id}")
    before = R(rollout.state)
    if action is RolloutAction.CANCEL:
        rollout_next(before, action)  # refused before anything changes
        to_state = update_next(U.PENDING, UpdateAction.CANCEL)
        assert to_state is not None
        await repo.move_all(session, rollout.id, U.PENDING.value, to_state.value, now)
    counts = await _move_rollout(session, ctx, rollout, action, by, now, reason)
    return before, rollout_out(rollout, counts)


def over_threshold(rollout: FirmwareRollout, counts: dict[str, int]) -> str | None:
    """Why the rollout must halt (its failures passed the threshold), or None."""
    failed = sum(counts.get(s.value, 0) for s in FAILURES)
    finished = sum(counts.get(s.value, 0) for s in FINISHED)
    if rollout.max_failures is not None and failed > rollout.max_failures:
        return f"{failed} cabinets failed (more than {rollout.max_failures})"
    if rollout.max_failure_pct is not None and finished and failed * 100 > rollout.max_failure_pct * finished:
        return f"{failed} of {finished} finished cabinets failed (more than {rollout.max_failure_pct} %)"
    return None


async def _halt_if_over(session: AsyncSession, ctx: FirmwareContext, rollout: FirmwareRollout, now: datetime) -> None:
    """Checked when a cabinet's update fails: a rollout past its threshold halts (nothing new starts). A
    resumed rollout halts again at its next failure while it is still past the threshold."""
    if R(rollout.state) not in (R.RUNNING, R.PAUSED):
        return
    await session.flush()
    why = over_threshold(rollout, (await repo.counts(session, [rollout.id]))[rollout.id])
    if why is not None:
        await _move_rollout(session, ctx, rollout, RolloutAction.HALT, "system", now, why)
        log.warning("firmware rollout halted", extra={"rollout_id": str(rollout.id), "reason": why})


async def _move_update(
    session: AsyncSession,
    ctx: FirmwareContext,
    rollout: FirmwareRollout,
    update: UpdateRow,
    action: UpdateAction,
    now: datetime,
    *,
    error: str | None = None,
    progress_pct: int | None = None,
    running_version: str | None = None,
) -> U | None:
    before = U(update.state)
    after = update_next(before, action)
    if after is None:
        return None
    update.state = after.value
    update.updated_at = now
    update.error = error if error is not None else update.error
    update.progress_pct = progress_pct if progress_pct is not None else update.progress_pct
    update.deadline_at = None if after in FINISHED else now + timedelta(seconds=ctx.stage_timeout_s)
    event = FirmwareUpdateChanged(
        rollout_id=rollout.id,
        cabinet_id=update.cabinet_id,
        model=rollout.model,
        version=rollout.version,
        from_state=before,
        to_state=after,
        error=update.error if after in FAILURES else None,
        running_version=running_version,
        at=now,
    )
    await ctx.publish(session, event, str(rollout.id))
    return after


async def on_report(
    session: AsyncSession, ctx: FirmwareContext, cabinet: Cabinet, msg: FirmwareReport, now: datetime
) -> None:
    """A cabinet's report on its update (the cabinet's row is locked by the caller). A report of a stage
    already passed changes nothing; an unknown command is logged and dropped."""
    found = await repo.update_by_cmd(session, cabinet.id, msg.cmd_id, lock=False)
    if found is None:
        log.warning("firmware report for no known update", extra={"device_id": cabinet.id, "cmd_id": msg.cmd_id})
        return
    # Locks in the sweeper's order: the rollout, then the update.
    rollout = await repo.get_rollout(session, found.rollout_id, for_update=True)
    update = await repo.update_by_cmd(session, cabinet.id, msg.cmd_id, lock=True)
    assert rollout is not None
    assert update is not None
    after = await _move_update(
        session,
        ctx,
        rollout,
        update,
        action_of(msg.stage),
        now,
        error=msg.error.value if msg.error is not None else None,
        progress_pct=msg.progress_pct,
        running_version=msg.running_version,
    )
    if after is None:
        log.info("late firmware report ignored", extra={"device_id": cabinet.id, "stage": msg.stage.value})
        return
    log.info(
        "firmware update progressed",
        extra={"device_id": cabinet.id, "rollout_id": str(rollout.id), "state": after.value, "error": update.error},
    )
    if after is U.DONE:
        cabinet.firmware = msg.running_version or rollout.version
    if after in FAILURES:
        await _halt_if_over(session, ctx, rollout, now)
    if after in FINISHED:
        ctx.ring(now)  # the next cabinet may start


async def sweep(
    sessionmaker: async_sessionmaker[AsyncSession], ctx: FirmwareContext, downlink: Downlink, now: datetime
) -> int:
    """One pass over the open rollouts: fail updates silent past their deadline, halt on failures, complete a
    finished rollout, and start pending cabinets up to the batch size. Each rollout is claimed with a row lock
    (another replica skips it), so each update is sent once. Returns the commands sent."""
    async with unit_of_work(sessionmaker) as session:
        rollout_ids = await repo.open_rollout_ids(session)
    sent = 0
    for rollout_id in rollout_ids:
        commands: list[tuple[str, FirmwareUpdate]] = []
        async with unit_of_work(sessionmaker) as session:
            rollout = await repo.get_rollout(session, rollout_id, for_update=True, skip_locked=True)
            if rollout is None or R(rollout.state) not in OPEN_ROLLOUTS:
                continue
            timed_out = False
            for update in await repo.overdue_updates(session, rollout_id, now):
                timed_out |= (
                    await _move_update(session, ctx, rollout, update, UpdateAction.TIMEOUT, now, error="timeout")
                    is not None
                )
            if timed_out:
                await _halt_if_over(session, ctx, rollout, now)
            if R(rollout.state) is R.RUNNING:
                await session.flush()
                counts = (await repo.counts(session, [rollout_id]))[rollout_id]
                active = sum(counts.get(s.value, 0) for s in ACTIVE)
                if active == 0 and counts.get(U.PENDING.value, 0) == 0:
                    await _move_rollout(session, ctx, rollout, RolloutAction.COMPLETE, "system", now)
                else:
                    commands = await _start(session, ctx, rollout, rollout.batch_size - active, now)
        for cabinet_id, command in commands:
            try:
                await downlink.send(cabinet_id, command)
                COMMANDS_DOWN.labels("firmware_update", "sent").inc()
                sent += 1
            except Exception as exc:  # it times out and counts as failed; the operator sees why
                COMMANDS_DOWN.labels("firmware_update", "not_sent").inc()
                log.warning("firmware update not sent", extra={"device_id": cabinet_id, "error": repr(exc)})
    return sent


async def _start(
    session: AsyncSession, ctx: FirmwareContext, rollout: FirmwareRollout, free: int, now: datetime
) -> list[tuple[str, FirmwareUpdate]]:
    image = await repo.get_image(session, rollout.image_id)
    assert image is not None
    commands = []
    url_now = time.time()
    expires = now + timedelta(seconds=ctx.links.signer.ttl_s)
    to_state = update_next(U.PENDING, UpdateAction.SEND)
    assert to_state is not None
    for row in await repo.startable(session, rollout.id, free):
        cmd_id = str(uuid.uuid4())
        deadline = now + timedelta(seconds=ctx.stage_timeout_s)
        await repo.mark_sent(
            session,
            rollout.id,
            row.cabinet_id,
            to_state.value,
            cmd_id=cmd_id,
            from_version=row.firmware,
            now=now,
            deadline=deadline,
        )
        event = FirmwareUpdateChanged(
            rollout_id=rollout.id,
            cabinet_id=row.cabinet_id,
            model=rollout.model,
            version=rollout.version,
            from_state=U.PENDING,
            to_state=to_state,
            running_version=row.firmware,
            at=now,
        )
        await ctx.publish(session, event, str(rollout.id))
        commands.append(
            (
                row.cabinet_id,
                FirmwareUpdate(
                    cmd_id=cmd_id,
                    expires_at=datetime_to_ms(expires),
                    model=image.model,
                    version=image.version,
                    url=ctx.links.url(image.id, url_now),
                    size=image.size,
                    sha256=image.sha256,
                    signature=image.signature,
                ),
            )
        )
    if commands:
        log.info(
            "firmware updates started", extra={"rollout_id": str(rollout.id), "cabinets": [c for c, _ in commands]}
        )
    return commands
