"""analytics-svc: `uvicorn analytics_svc.main:create_app --factory`."""

from fastapi import FastAPI

from analytics_svc import consumers
from analytics_svc.settings import Settings
from analytics_svc.stats.endpoints import router as stats_router
from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app


def _consumers(_: Runtime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            topics=[Topic.RENTALS, Topic.USERS, Topic.DEVICE_RETURNS],
            handlers={
                "billing.rental.started": consumers.on_rental_started,
                "billing.rental.ended": consumers.on_rental_ended,
                "user.user.registered": consumers.on_user_registered,
                "device.bank.returned": consumers.on_bank_returned,
            },
        )
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="analytics-svc",
        routers=[stats_router],
        consumers=_consumers,
    )
