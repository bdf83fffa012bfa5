"""Firmware: operators (`firmware:manage`) upload images and run rollouts; devices download images through
signed, expiring links (no token: the link is the credential)."""

import time
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from device_svc import audit_states as states
from device_svc.firmware import repository as repo
from device_svc.firmware import service
from device_svc.firmware.lifecycle import RolloutAction
from device_svc.firmware.schemas import (
    ImageList,
    ImageOut,
    Model,
    RolloutAct,
    RolloutIn,
    RolloutList,
    RolloutOut,
    Sha256,
    Version,
)
from device_svc.models import FirmwareImage
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep, after_commit
from kit.errors import BusinessError, Forbidden
from kit.ratelimit import rate_class

FirmwareManager = Annotated[Principal, Depends(require_permission("firmware:manage"))]
Limit = Annotated[int, Query(ge=1, le=1000)]

router = APIRouter(tags=["firmware"])


class LinkInvalid(Forbidden):
    code = "link_invalid"
    title = "The download link is not one the platform signed"


class LinkExpired(BusinessError):
    status = 410
    code = "link_expired"
    title = "The download link has expired"


def _context(runtime: RuntimeDep) -> service.FirmwareContext:
    ctx = runtime.extras["firmware"]
    assert isinstance(ctx, service.FirmwareContext)
    return ctx


Context = Annotated[service.FirmwareContext, Depends(_context)]


def _image_out(image: FirmwareImage) -> ImageOut:
    return ImageOut(
        image_id=image.id,
        model=image.model,
        version=image.version,
        size=image.size,
        sha256=image.sha256,
        signature=image.signature,
        notes=image.notes,
        uploaded_by=image.uploaded_by,
        created_at=image.created_at,
    )


@router.post(
    "/v1/ops/firmware/images",
    status_code=201,
    response_model=ImageOut,
    dependencies=[audited("firmware_image.upload", "firmware_image"), rate_class("upload")],
    responses={409: {"description": "firmware_version_exists"}, 422: {"description": "checksum_mismatch"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_image(
    request: Request,
    staff: FirmwareManager,
    session: SessionDep,
    ctx: Context,
    audit: CurrentAudit,
    model: Annotated[Model, Query()],
    version: Annotated[Version, Query()],
    sha256: Annotated[Sha256 | None, Query(description="The image's SHA-256 as built; refused if it differs")] = None,
    notes: Annotated[str, Query(max_length=500)] = "",
) -> ImageOut:
    """The image's bytes as the request body (at most the kit's upload size). device-svc computes the SHA-256
    and signs (model, version, SHA-256) with the platform's firmware key."""
    data = await request.body()
    image = await service.upload(
        session,
        ctx,
        model=model,
        version=version,
        claimed_sha256=sha256,
        notes=notes,
        data=data,
        by=staff.subject,
        now=datetime.now(UTC),
    )
    audit.note(
        target_id=image.id, after={"model": model, "version": version, "sha256": image.sha256, "size": image.size}
    )
    return _image_out(image)


@router.get("/v1/ops/firmware/images", response_model=ImageList)
async def images(_: FirmwareManager, session: ReadSessionDep, limit: Limit = 100) -> ImageList:
    return ImageList(items=[_image_out(i) for i in await repo.list_images(session, limit)])


@router.post(
    "/v1/ops/firmware/rollouts",
    status_code=201,
    response_model=RolloutOut,
    dependencies=[audited("firmware_rollout.create", "firmware_rollout")],
    responses={404: {"description": "firmware_image_not_found"}, 422: {"description": "no_target_cabinets"}},
)
async def create_rollout(
    body: RolloutIn, staff: FirmwareManager, session: SessionDep, ctx: Context, audit: CurrentAudit
) -> RolloutOut:
    """Start rolling an image out: its model's cabinets in `region`, `percent` of them, `batch_size` at a time."""
    now = datetime.now(UTC)
    out = await service.create_rollout(session, ctx, body, staff.subject, now)
    audit.note(target_id=out.rollout_id, after=body.model_dump(mode="json") | {"cabinets": sum(out.counts.values())})
    after_commit(session, lambda: ctx.ring(datetime.now(UTC)))
    return out


@router.get("/v1/ops/firmware/rollouts", response_model=RolloutList)
async def rollouts(_: FirmwareManager, session: ReadSessionDep, limit: Limit = 100) -> RolloutList:
    return RolloutList(items=await service.list_rollouts(session, limit))


@router.get("/v1/ops/firmware/rollouts/{rollout_id}", response_model=RolloutOut)
async def rollout(rollout_id: UUID, _: FirmwareManager, session: ReadSessionDep, limit: Limit = 1000) -> RolloutOut:
    """The rollout with its counts of cabinets per update state and each cabinet's state (the first `limit`)."""
    return await service.get_rollout(session, rollout_id, limit)


async def _act(
    action: RolloutAction,
    rollout_id: UUID,
    body: RolloutAct,
    staff: Principal,
    session: SessionDep,
    ctx: service.FirmwareContext,
    audit: CurrentAudit,
) -> RolloutOut:
    _, out = await service.act(session, ctx, rollout_id, action, staff.subject, body.reason, datetime.now(UTC))
    audit.note(reason=body.reason or None)
    after_commit(session, lambda: ctx.ring(datetime.now(UTC)))
    return out


@router.post(
    "/v1/ops/firmware/rollouts/{rollout_id}/pause",
    response_model=RolloutOut,
    dependencies=[audited("firmware_rollout.pause", "firmware_rollout", "rollout_id", state=states.ROLLOUT)],
)
async def pause(
    rollout_id: UUID, body: RolloutAct, staff: FirmwareManager, session: SessionDep, ctx: Context, audit: CurrentAudit
) -> RolloutOut:
    """No new cabinet starts; those updating finish."""
    return await _act(RolloutAction.PAUSE, rollout_id, body, staff, session, ctx, audit)


@router.post(
    "/v1/ops/firmware/rollouts/{rollout_id}/resume",
    response_model=RolloutOut,
    dependencies=[audited("firmware_rollout.resume", "firmware_rollout", "rollout_id", state=states.ROLLOUT)],
)
async def resume(
    rollout_id: UUID, body: RolloutAct, staff: FirmwareManager, session: SessionDep, ctx: Context, audit: CurrentAudit
) -> RolloutOut:
    """A paused or halted rollout goes on (a halted one halts again at its next failure while past its threshold)."""
    return await _act(RolloutAction.RESUME, rollout_id, body, staff, session, ctx, audit)


@router.post(
    "/v1/ops/firmware/rollouts/{rollout_id}/cancel",
    response_model=RolloutOut,
    dependencies=[audited("firmware_rollout.cancel", "firmware_rollout", "rollout_id", state=states.ROLLOUT)],
)
async def cancel(
    rollout_id: UUID, body: RolloutAct, staff: FirmwareManager, session: SessionDep, ctx: Context, audit: CurrentAudit
) -> RolloutOut:
    """Cabinets not yet sent the update are cancelled; those updating finish and are recorded."""
    return await _act(RolloutAction.CANCEL, rollout_id, body, staff, session, ctx, audit)


@router.get(
    "/v1/firmware/{image_id}",
    responses={200: {"content": {"application/octet-stream": {}}}, 403: {"description": "link_invalid"}, 410: {}},
)
async def download(
    image_id: UUID,
    session: ReadSessionDep,
    ctx: Context,
    exp: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """A firmware image for a device, through the signed link its `firmware_update` command carried."""
    if not ctx.links.signer.valid(image_id, exp, sig):
        raise LinkInvalid()
    remaining = exp - int(time.time())
    if remaining <= 0:
        raise LinkExpired()
    data = await repo.image_bytes(session, image_id)
    if data is None:
        raise service.ImageNotFound(f"No firmware image {image_id}")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Cache-Control": f"private, max-age={remaining}", "X-Content-Type-Options": "nosniff"},
    )
