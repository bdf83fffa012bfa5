"""The night light: users light a cabinet they stand at (scope `map`); staff set a cabinet's mode."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends

from device_svc import audit_states as states
from device_svc.lighting import service
from device_svc.lighting.schemas import LightAnswer, LightMe, NightLightOut, NightLightSetting
from device_svc.ops.endpoints import Maintainer, _downlink
from device_svc.registry.endpoints import DeviceIdPath
from kit.app import RuntimeDep
from kit.audit import audited
from kit.auth import CurrentUser, user_scope
from kit.db import SessionDep, after_commit
from kit.periodic import Alarm

router = APIRouter(tags=["night light"])


def _rules(runtime: RuntimeDep) -> service.LightRules:
    rules = runtime.extras["light_rules"]
    assert isinstance(rules, service.LightRules)
    return rules


Rules = Annotated[service.LightRules, Depends(_rules)]


@router.post(
    "/v1/cabinets/{cabinet_id}/light",
    response_model=LightAnswer,
    status_code=202,
    dependencies=[user_scope("map")],
    responses={403: {"description": "not_near_cabinet"}, 409: {"description": "device_offline"}, 429: {}},
)
async def light_for_me(
    cabinet_id: DeviceIdPath,
    body: LightMe,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    rules: Rules,
) -> LightAnswer:
    """Light the cabinet's night light for a minute to scan its code in the dark: for a user within reach of
    it (the phone's position), a few times per ten minutes (429 with Retry-After beyond)."""
    return await service.light_for_user(
        session, _downlink(runtime), rules, user.user_id, cabinet_id, body, datetime.now(UTC)
    )


@router.put(
    "/v1/ops/cabinets/{cabinet_id}/night-light",
    response_model=NightLightOut,
    dependencies=[audited("cabinet.set_night_light", "cabinet", "cabinet_id", state=states.CABINET)],
)
async def set_night_light(
    cabinet_id: DeviceIdPath, body: NightLightSetting, staff: Maintainer, session: SessionDep, runtime: RuntimeDep
) -> NightLightOut:
    """`auto` (default): lit from local sunset to sunrise; `on` / `off`: an operator's override. The schedule
    applies it at once."""
    out = await service.set_mode(session, cabinet_id, body.mode, staff.subject)
    alarm = runtime.extras["light_schedule"]
    assert isinstance(alarm, Alarm)
    after_commit(session, lambda: alarm.ring_at(datetime.now(UTC)))
    return out
