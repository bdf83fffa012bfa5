"""Operations API for administrators, operators and field staff."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from device_svc import audit_states as states
from device_svc.maintenance import service as maintenance
from device_svc.models import BANK_STATES
from device_svc.mqtt.downlink import Downlink
from device_svc.ops import service
from device_svc.ops.schemas import (
    AlarmList,
    AlarmResolved,
    BankAdminList,
    BankAdminOut,
    CabinetPresence,
    CommandAccepted,
    DeviceStatusList,
    LightRequest,
    MaintenanceEject,
    MaintenanceTaskList,
    ResolveAlarm,
    StateChange,
    TransitionList,
)
from device_svc.registry.endpoints import DeviceIdPath
from device_svc.settings import Settings
from kit.app import RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep
from kit.inputs import INT64_MAX, UtcDatetime

Staff = Annotated[Principal, Depends(require_permission("devices:read"))]
Maintainer = Annotated[Principal, Depends(require_permission("devices:maintain"))]
Limit = Annotated[int, Query(ge=1, le=1000)]

router = APIRouter(prefix="/v1/ops", tags=["operations"])


def _downlink(runtime: Any) -> Downlink:
    downlink = runtime.extras["downlink"]
    assert isinstance(downlink, Downlink)
    return downlink


@router.get("/alarms", response_model=AlarmList)
async def alarms(_: Staff, session: SessionDep, limit: Limit = 500) -> AlarmList:
    """Open alarms: banks moved while not rented, overheating, position overdue, maintenance due,
    bank modules and cabinets offline."""
    return AlarmList(items=await service.alarms(session, limit))


@router.post("/alarms/resolve", response_model=AlarmResolved, dependencies=[audited("alarm.resolve", "device")])
async def resolve(
    body: ResolveAlarm, who: Maintainer, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> AlarmResolved:
    """Clear the alarm; its open maintenance task (same device and cause) is done with the note, by the
    staff member, in the task's history and on device.maintenance.v1."""
    await service.resolve_alarm(session, body.device_id, body.kind)
    closed = await maintenance.close_for_alarm(
        session, runtime, body.device_id, body.kind, who.subject, body.note.strip() or "alarm resolved"
    )
    audit.note(target_id=body.device_id, before={body.kind: "open"}, after={body.kind: "resolved"}, closed_tasks=closed)
    return AlarmResolved(device_id=body.device_id, kind=body.kind, closed_tasks=closed)


@router.get("/devices", response_model=DeviceStatusList)
async def devices(
    _: Staff,
    session: SessionDep,
    kind: Literal["cabinet", "bank"] | None = None,
    online: bool | None = None,
    limit: Limit = 500,
) -> DeviceStatusList:
    """Communication status: online, last seen, signal strength and operating state per device."""
    return DeviceStatusList(items=await service.device_statuses(session, kind, online, limit))


@router.get("/presence", response_model=CabinetPresence)
async def presence(
    _: Staff,
    session: ReadSessionDep,
    heard_since: Annotated[UtcDatetime | None, Query()] = None,
    silent_limit: Annotated[int, Query(ge=0, le=1000)] = 100,
) -> CabinetPresence:
    """How many cabinets are online, how many were heard from since a moment (after an outage: who is
    back), and the first silent ones by id. One query, cheap at any fleet size."""
    return await service.cabinet_presence(session, heard_since, silent_limit)


@router.get("/banks", response_model=BankAdminList)
async def banks(
    _: Staff,
    session: SessionDep,
    state: Annotated[str | None, Query(pattern="^(" + "|".join(BANK_STATES) + ")$")] = None,
    maintenance_due: bool | None = None,
    has_module: bool | None = None,
    cabinet_id: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 200,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
) -> BankAdminList:
    """Banks with state, faults, time in service, usage, power statistics and open alarms, in id order.
    `q`: an id prefix, or a bank's exact QR code, NFC uid or BLE address. Page with `after` (the
    `next_after` of the page before; keyset, cheap at any depth) rather than `offset`."""
    items = await service.query_banks(
        session,
        state=state,
        maintenance_due=maintenance_due,
        has_module=has_module,
        cabinet_id=cabinet_id,
        limit=limit,
        offset=offset,
        after=after,
        q=q,
    )
    return BankAdminList(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get("/banks/{bank_id}", response_model=BankAdminOut)
async def bank(bank_id: DeviceIdPath, _: Staff, session: SessionDep) -> BankAdminOut:
    """One bank's operations view (as in the list); 404 bank_not_found."""
    return await service.bank(session, bank_id)


@router.get("/banks/{bank_id}/transitions", response_model=TransitionList)
async def transitions(
    bank_id: DeviceIdPath,
    _: Staff,
    session: SessionDep,
    limit: Limit = 500,
    order: Literal["oldest", "newest"] = "oldest",
) -> TransitionList:
    """The bank's state changes, oldest first (the first `limit`), or with order=newest the latest `limit`
    newest first."""
    return TransitionList(items=await service.transitions(session, bank_id, limit, newest_first=order == "newest"))


@router.post(
    "/banks/{bank_id}/state",
    response_model=BankAdminOut,
    dependencies=[audited("bank.change_state", "bank", "bank_id", state=states.BANK)],
)
async def change_state(
    bank_id: DeviceIdPath, body: StateChange, who: Maintainer, session: SessionDep, audit: CurrentAudit
) -> BankAdminOut:
    audit.note(reason=body.reason)
    return service.bank_admin_out(await service.change_state(session, bank_id, body.state, body.reason, who.subject), 0)


@router.post(
    "/banks/{bank_id}/ring",
    response_model=CommandAccepted,
    status_code=202,
    dependencies=[audited("bank.ring", "bank", "bank_id")],
)
async def ring(
    bank_id: DeviceIdPath, _: Maintainer, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> CommandAccepted:
    """Make a bank with a module beep; 409 device_offline at once when it is offline."""
    settings = runtime.settings
    duration = settings.ring_duration_s if isinstance(settings, Settings) else 10
    return _sent(audit, await service.ring(session, _downlink(runtime), bank_id, duration))


def _sent(audit: CurrentAudit, accepted: CommandAccepted) -> CommandAccepted:
    """A command changes no stored state of its target until the device answers: the entry records it sent."""
    audit.note(before={}, after={"command": accepted.type, "cmd_id": accepted.cmd_id, "device_id": accepted.device_id})
    return accepted


@router.post(
    "/banks/{bank_id}/eject",
    response_model=CommandAccepted,
    status_code=202,
    dependencies=[audited("bank.eject_for_maintenance", "bank", "bank_id")],
)
async def eject_for_maintenance(
    bank_id: DeviceIdPath,
    body: MaintenanceEject,
    who: Maintainer,
    session: SessionDep,
    runtime: RuntimeDep,
    audit: CurrentAudit,
) -> CommandAccepted:
    """Eject a bank from its slot to take it away for service, with a reason (audited). 202 once sent; the
    cabinet's ok puts the bank in maintenance (held, out of its slot), recorded with the reason in its
    transitions; a refusal or no answer within 15 s leaves it where it was. 409 device_offline,
    bank_not_in_cabinet, eject_pending."""
    reason = body.reason.strip()
    audit.note(reason=reason)
    accepted = await service.eject_for_maintenance(session, runtime.extras["ejects"], bank_id, reason, who.subject)
    audit.note(cabinet_id=accepted.device_id, slot=accepted.slot, cmd_id=accepted.cmd_id)
    return _sent(audit, accepted)


@router.post(
    "/cabinets/{cabinet_id}/light",
    response_model=CommandAccepted,
    status_code=202,
    dependencies=[audited("cabinet.light", "cabinet", "cabinet_id")],
)
async def light(
    cabinet_id: DeviceIdPath,
    body: LightRequest,
    _: Maintainer,
    session: SessionDep,
    runtime: RuntimeDep,
    audit: CurrentAudit,
) -> CommandAccepted:
    """Switch a cabinet's night light (scanning in the dark); 409 device_offline when offline."""
    return _sent(audit, await service.light(session, _downlink(runtime), cabinet_id, body.on, body.duration_s))


@router.get("/maintenance-tasks", response_model=MaintenanceTaskList)
async def maintenance_tasks(_: Staff, session: SessionDep, limit: Limit = 500) -> MaintenanceTaskList:
    """What field staff should visit: offline cabinets, faulty slots, banks faulty, in maintenance,
    lost or due for maintenance."""
    return MaintenanceTaskList(items=await service.maintenance_tasks(session, limit))
