"""notify-svc: `uvicorn notify_svc.main:create_app --factory`."""

from fastapi import FastAPI

from contracts import Topic
from kit.app import ConsumerSpec, Runtime, create_service_app
from notify_svc import consumers
from notify_svc.messages.endpoints import router as messages_router
from notify_svc.settings import Settings


def _consumers(_: Runtime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            topics=[Topic.RENTALS, Topic.PAYMENTS],
            handlers={
                "billing.rental.started": consumers.on_rental_started,
                "billing.rental.ended": consumers.on_rental_ended,
                "billing.rental.failed": consumers.on_rental_failed,
                "asset.charge.settled": consumers.on_charge_settled,
                "asset.charge.failed": consumers.on_charge_failed,
                "asset.refund.settled": consumers.on_refund_settled,
            },
        )
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="notify-svc",
        routers=[messages_router],
        consumers=_consumers,
    )
