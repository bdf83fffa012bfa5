"""Operations: users' open fault reports, and clearing them once a bank has been checked."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from device_svc import audit_states as states
from device_svc.faults import repository as repo
from device_svc.faults import service
from device_svc.faults.schemas import Cleared, ClearIn, FaultReportList, FaultReportOut
from kit.app import RuntimeDep
from kit.audit import audited
from kit.auth import Principal, require_permission
from kit.db import ReadSessionDep, SessionDep

router = APIRouter(prefix="/v1/ops", tags=["operations"])

Staff = Annotated[Principal, Depends(require_permission("devices:read"))]
Maintainer = Annotated[Principal, Depends(require_permission("devices:maintain"))]
BankId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/fault-reports")
async def open_reports(
    _: Staff,
    session: ReadSessionDep,
    bank_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> FaultReportList:
    rows = await repo.open_reports(session, bank_id, limit)
    return FaultReportList(
        items=[
            FaultReportOut(
                ticket_id=r.ticket_id,
                bank_id=r.bank_id,
                kind=r.kind,
                cabinet_id=r.cabinet_id,
                reported_at=r.reported_at,
            )
            for r in rows
        ]
    )


@router.post(
    "/banks/{bank_id}/fault-reports/clear",
    dependencies=[audited("bank.clear_fault_reports", "bank", "bank_id", state=states.BANK)],
)
async def clear(bank_id: BankId, body: ClearIn, staff: Maintainer, session: SessionDep, runtime: RuntimeDep) -> Cleared:
    """The bank was checked: close its users' reports and lend it again (unless its state or slot
    still keeps it)."""
    return await service.clear(session, runtime, bank_id, staff.subject, body.note)
