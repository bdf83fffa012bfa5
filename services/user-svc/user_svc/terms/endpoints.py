from fastapi import APIRouter

from user_svc.context import ContextDep
from user_svc.terms.schemas import TermsOut

router = APIRouter(prefix="/v1/terms", tags=["terms"])


@router.get("")
async def current_terms(context: ContextDep) -> TermsOut:
    return TermsOut(version=context.terms.version, text=context.terms.text)
