"""Registry administration for super administrators and operators: provision cabinets and banks
(one or a bulk import), rotate or revoke device credentials, retire devices."""

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import EventData
from device_svc import audit_states as states
from device_svc.admin import service
from device_svc.admin.schemas import (
    BankCreate,
    BankImport,
    BrokerAuthState,
    BrokerAuthView,
    CabinetCreate,
    CabinetImport,
    CabinetOut,
    CabinetUpdate,
    Credential,
    ImportResult,
    Provisioned,
    Revoked,
)
from device_svc.brokerauth.repository import all_syncs, credentials_version
from device_svc.brokerauth.service import LIVE_WITHIN, wait_for_brokers
from device_svc.certificates import service as certificates
from device_svc.models import Cabinet
from device_svc.registry.endpoints import DeviceIdPath
from device_svc.settings import Settings
from kit.app import Runtime, RuntimeDep
from kit.audit import CurrentAudit, audited
from kit.auth import Principal, require_permission
from kit.db import SessionDep, after_commit
from kit.ratelimit import rate_class

log = logging.getLogger(__name__)

Admin = Annotated[Principal, Depends(require_permission("devices:provision"))]

router = APIRouter(prefix="/v1/admin", tags=["registry administration"])


async def _brokers_after_commit(session: AsyncSession, runtime: Runtime) -> int:
    """The credentials version this unit of work's change makes; once it has committed (before the answer is
    sent) wait until every broker's auth sidecar has applied it (device_svc.brokerauth), at most
    BROKER_SYNC_WAIT_S: normally the device's new password works, or its revoked one is refused, at every
    broker when the answer arrives, whichever replica gave it."""
    await session.flush()
    version = await credentials_version(session)
    settings = runtime.settings
    budget = settings.broker_sync_wait_s if isinstance(settings, Settings) else 0.0

    async def wait() -> None:
        if not await wait_for_brokers(runtime.sessionmaker, version, budget):
            log.warning("a broker has not applied a credential change yet", extra={"version": version})

    after_commit(session, wait)
    return version


def _publisher(runtime: Runtime) -> service.Publish:
    async def publish(session: AsyncSession, data: EventData, key: str) -> Envelope:
        return await runtime.publish(session, data, key=key)

    return publish


def _credential(device_id: str, password: str | None, version: int) -> Credential | None:
    return Credential(device_id=device_id, password=password, broker_version=version) if password else None


@router.post(
    "/cabinets",
    response_model=Provisioned,
    status_code=201,
    dependencies=[audited("cabinet.create", "cabinet", state=states.CABINET)],
)
async def create_cabinet(
    body: CabinetCreate, _: Admin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> Provisioned:
    out, password = await service.create_cabinet(session, body)
    audit.note(target_id=out.id)
    version = await _brokers_after_commit(session, runtime)
    return out.model_copy(update={"credential": _credential(out.id, password, version)})


@router.patch(
    "/cabinets/{cabinet_id}",
    response_model=CabinetOut,
    dependencies=[audited("cabinet.update", "cabinet", "cabinet_id", state=states.CABINET)],
)
async def update_cabinet(cabinet_id: DeviceIdPath, body: CabinetUpdate, _: Admin, session: SessionDep) -> CabinetOut:
    """Address, region, opening hours, position, operating state (active / maintenance: off the map)."""
    return _cabinet_out(await service.update_cabinet(session, cabinet_id, body))


def _cabinet_out(c: Cabinet) -> CabinetOut:
    return CabinetOut(
        id=c.id,
        name=c.name,
        lat=c.lat,
        lon=c.lon,
        address=c.address,
        region=c.region,
        opening_hours=c.opening_hours,
        state=c.state,
        slot_count=c.slot_count,
        model=c.model,
        protocol=c.protocol,
    )


@router.post(
    "/banks",
    response_model=Provisioned,
    status_code=201,
    dependencies=[audited("bank.create", "bank", state=states.BANK)],
)
async def create_bank(
    body: BankCreate, _: Admin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> Provisioned:
    out, password = await service.create_bank(session, body)
    audit.note(target_id=out.id)
    version = await _brokers_after_commit(session, runtime) if password else 0
    return out.model_copy(update={"credential": _credential(out.id, password, version)})


@router.post(
    "/cabinets/import",
    response_model=ImportResult,
    dependencies=[audited("cabinet.import", "cabinet"), rate_class("upload")],
)
async def import_cabinets(
    body: CabinetImport, _: Admin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> ImportResult:
    """Bulk provisioning (up to 5000 a request), set-based: ids already registered are skipped, so a re-run
    is harmless; each new cabinet gets its slots and a credential (its password shown once, here). One
    transaction, then one broker password-file rewrite and one SIGHUP for the whole batch."""
    imported = await service.import_cabinets(session, body.items)
    _imported(audit, imported)
    return _import_result(imported, await _brokers_after_commit(session, runtime) if imported.passwords else 0)


@router.post(
    "/banks/import", response_model=ImportResult, dependencies=[audited("bank.import", "bank"), rate_class("upload")]
)
async def import_banks(
    body: BankImport, _: Admin, session: SessionDep, runtime: RuntimeDep, audit: CurrentAudit
) -> ImportResult:
    """Bulk import (up to 5000 a request), set-based; ids already registered are skipped, so a re-run is
    harmless. One transaction: an identity clash refuses the whole import."""
    imported = await service.import_banks(session, body.items)
    _imported(audit, imported)
    return _import_result(imported, await _brokers_after_commit(session, runtime) if imported.passwords else 0)


def _imported(audit: CurrentAudit, imported: service.Imported) -> None:
    """Nothing existed before; after: the ids registered (the skipped ones were there already)."""
    audit.created("", {"created": [c.id for c in imported.created]}, skipped=len(imported.skipped))


def _import_result(imported: service.Imported, broker_version: int) -> ImportResult:
    created = [
        c.model_copy(update={"credential": _credential(c.id, imported.passwords.get(c.id), broker_version)})
        for c in imported.created
    ]
    return ImportResult(created=created, skipped=imported.skipped)


@router.post(
    "/devices/{device_id}/credentials/rotate",
    response_model=Credential,
    dependencies=[audited("device.rotate_credentials", "device", "device_id", state=states.DEVICE)],
)
async def rotate(device_id: DeviceIdPath, _: Admin, session: SessionDep, runtime: RuntimeDep) -> Credential:
    """A new password; the old one stops working once the broker reloaded (no restart)."""
    password = await service.rotate(session, device_id)
    await certificates.revoke_all(session, certificates.device_ca(runtime), device_id)
    version = await _brokers_after_commit(session, runtime)
    return Credential(device_id=device_id, password=password, broker_version=version)


@router.post(
    "/devices/{device_id}/credentials/revoke",
    response_model=Revoked,
    dependencies=[audited("device.revoke_credentials", "device", "device_id", state=states.DEVICE)],
)
async def revoke(device_id: DeviceIdPath, _: Admin, session: SessionDep, runtime: RuntimeDep) -> Revoked:
    await service.revoke(session, device_id, _publisher(runtime))
    await certificates.revoke_all(session, certificates.device_ca(runtime), device_id)
    return Revoked(device_id=device_id, active=False, broker_version=await _brokers_after_commit(session, runtime))


@router.post(
    "/devices/{device_id}/retire",
    response_model=Provisioned,
    dependencies=[audited("device.retire", "device", "device_id", state=states.DEVICE)],
)
async def retire(
    device_id: DeviceIdPath,
    _: Admin,
    session: SessionDep,
    runtime: RuntimeDep,
    reason: Annotated[str, Body(embed=True, min_length=1, max_length=80)] = "end of life",
) -> Provisioned:
    out = await service.retire(session, device_id, reason, _publisher(runtime))
    await certificates.revoke_all(session, certificates.device_ca(runtime), device_id)
    await _brokers_after_commit(session, runtime)
    return out


@router.get("/broker-auth", response_model=BrokerAuthView)
async def broker_auth(_: Admin, session: SessionDep) -> BrokerAuthView:
    """Each broker's auth sidecar: the credentials version its password file holds, and whether it is live."""
    live_since = datetime.now(UTC) - LIVE_WITHIN
    return BrokerAuthView(
        version=await credentials_version(session),
        brokers=[
            BrokerAuthState(
                broker_id=s.broker_id,
                version=s.version,
                devices=s.devices,
                synced_at=s.synced_at,
                live=s.synced_at >= live_since,
            )
            for s in await all_syncs(session)
        ],
    )
