from fastapi import APIRouter

from billing_svc.prices.schemas import PriceOut
from billing_svc.rentals.service import current_price, settings_of
from kit.app import RuntimeDep

router = APIRouter(tags=["pricing"])

RULE = (
    "Free up to free_minutes; otherwise every started period from the start costs price_per_period_fen, "
    "and each 24 h window from the start costs at most daily_cap_fen."
)


@router.get("/v1/pricing")
async def get_pricing(runtime: RuntimeDep) -> PriceOut:
    price = current_price(settings_of(runtime))
    return PriceOut(
        period_minutes=price.period_minutes,
        price_per_period_fen=price.price_per_period_fen,
        free_minutes=price.free_minutes,
        daily_cap_fen=price.daily_cap_fen,
        rule=RULE,
    )
