"""device-svc app: `uvicorn device_svc.main:create_app --factory --port 8002`."""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import Envelope
from contracts.events import DeviceAlarmKind, DeviceAlarmRaised, EventData
from device_svc.admin.endpoints import router as admin_router
from device_svc.certificates.endpoints import router as certificates_router
from device_svc.certificates.service import load_device_ca
from device_svc.commands.service import EjectService
from device_svc.consumers import consumer_specs
from device_svc.faults.endpoints import router as faults_router
from device_svc.firmware import service as firmware
from device_svc.firmware.endpoints import router as firmware_router
from device_svc.firmware.signing import DownloadLinks, load_signing_key
from device_svc.geo.endpoints import router as geo_router
from device_svc.lighting.endpoints import router as lighting_router
from device_svc.lighting.service import LightRules, run_schedule
from device_svc.maintenance import service as maintenance
from device_svc.maintenance.endpoints import router as maintenance_router
from device_svc.metrics import ALARMS_RAISED
from device_svc.mqtt.dispatch import DeviceLanes, IntakeLanes
from device_svc.mqtt.downlink import Downlink
from device_svc.mqtt.gateway import Ack, MqttGateway
from device_svc.mqtt.handlers import MessageProcessor
from device_svc.mqtt.intake import presence_only
from device_svc.mqtt.throttle import DeviceThrottle
from device_svc.ops.endpoints import router as ops_router
from device_svc.protocols.lookup import DbLookup
from device_svc.registry.endpoints import router as registry_router
from device_svc.rented.endpoints import router as rented_router
from device_svc.screens import service as screens
from device_svc.settings import Settings
from device_svc.sweepers import fail_expired_commands, mark_offline_until_next, prune_inbound_messages, sweep_banks
from device_svc.telemetry.ingest import TelemetryIngest
from device_svc.telemetry.service import BankDevices, BankRules
from device_svc.telemetry.snapshots import SnapshotIngest
from kit.app import Runtime, create_service_app
from kit.db import unit_of_work
from kit.periodic import Alarm, run_periodically

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def device_lifespan(runtime: Runtime) -> AsyncIterator[None]:
        async def publish(session: AsyncSession, data: EventData, key: str) -> Envelope:
            return await runtime.publish(session, data, key=key)

        gateway = MqttGateway(settings)
        lookup = DbLookup(runtime.sessionmaker)
        downlink = Downlink(gateway, lookup.protocol_of)
        ejects = EjectService(
            runtime.sessionmaker,
            publish,
            downlink,
            min_battery_pct=settings.min_rent_battery_pct,
            max_clock_skew_s=settings.max_clock_skew_s,
        )

        async def publish_many(
            session: AsyncSession, events: Sequence[tuple[EventData, str, str | None]]
        ) -> list[Envelope]:
            return await runtime.publish_many(session, events)

        rules = BankRules(
            high_temperature_c=settings.bank_high_temperature_c,
            cycle_budget=settings.bank_cycle_budget,
            cycle_warning_ratio=settings.bank_cycle_warning_ratio,
            min_health_pct=settings.bank_min_health_pct,
            ring_duration_s=settings.ring_duration_s,
            max_clock_skew_s=settings.max_clock_skew_s,
        )
        telemetry = TelemetryIngest(
            runtime.sessionmaker,
            publish_many,
            downlink,
            rules,
            max_rows=settings.telemetry_batch_max,
            workers=settings.telemetry_batch_writers,
            feed=runtime.publish_direct,
        )
        snapshots = SnapshotIngest(
            runtime.sessionmaker,
            publish_many,
            feed=runtime.publish_direct,
            min_battery_pct=settings.min_rent_battery_pct,
            max_clock_skew_s=settings.max_clock_skew_s,
            max_rows=settings.state_batch_max,
            workers=settings.state_batch_writers,
        )
        firmware_context = firmware.FirmwareContext(
            publish=publish,
            links=DownloadLinks.make(
                settings.firmware_url_key.get_secret_value().encode(),
                settings.firmware_url_ttl_s,
                settings.firmware_download_base_url or settings.device_svc_url,
            ),
            signing_key=(
                load_signing_key(settings.firmware_signing_key_file) if settings.firmware_signing_key_file else None
            ),
            stage_timeout_s=settings.firmware_stage_timeout_s,
        )
        processor = MessageProcessor(
            runtime.sessionmaker,
            publish,
            downlink,
            ejects,
            min_battery_pct=settings.min_rent_battery_pct,
            max_clock_skew_s=settings.max_clock_skew_s,
            banks=BankDevices(publish),
            telemetry=telemetry,
            snapshots=snapshots,
            max_concurrency=max(
                settings.db_pool_size
                - settings.telemetry_batch_writers
                - settings.state_batch_writers
                - settings.critical_concurrency,
                1,
            ),
            critical_concurrency=settings.critical_concurrency,
            lookup=lookup,
            firmware=firmware_context,
        )
        task_rules = maintenance.TaskRules(
            cycle_budget=settings.bank_cycle_budget,
            cycle_warning_ratio=settings.bank_cycle_warning_ratio,
            min_health_pct=settings.bank_min_health_pct,
            cabinet_offline_after_s=settings.maintenance_cabinet_offline_after_s,
        )
        lanes = IntakeLanes(
            lambda: DeviceLanes(
                processor.process,
                max_pending_per_device=settings.max_pending_per_device,
                attempts=settings.message_attempts,
                superseded=presence_only,
            )
        )

        async def raise_flood_alarm(device_id: str, topic: str) -> None:
            at = datetime.now(UTC)
            detail = f"over {settings.device_message_rate_per_s:g} messages/s; excess dropped (last: {topic[:120]})"
            try:
                async with unit_of_work(runtime.sessionmaker) as session:
                    await publish(
                        session,
                        DeviceAlarmRaised(device_id=device_id, kind=DeviceAlarmKind.FLOODING, at=at, detail=detail),
                        device_id,
                    )
            except Exception:  # the throttle goes on; the metric and the log already tell it
                log.exception("flood alarm not published", extra={"device_id": device_id})

        flood_alarms: set[asyncio.Task[None]] = set()

        def on_flood(device_id: str, topic: str) -> None:
            ALARMS_RAISED.labels(DeviceAlarmKind.FLOODING.value).inc()
            task = asyncio.create_task(raise_flood_alarm(device_id, topic), name=f"flood-alarm-{device_id}")
            flood_alarms.add(task)
            task.add_done_callback(flood_alarms.discard)

        throttle = DeviceThrottle(settings.device_message_rate_per_s, settings.device_message_burst, on_flood=on_flood)

        def on_message(topic: str, payload: bytes, received_at: datetime, ack: Ack, retained: bool) -> None:
            if not throttle.admit(topic):
                ack()  # over the device's budget: dropped, counted (mqtt/throttle.py)
                return
            # Heartbeats and bank reports straight to their batch; everything else through a device lane.
            if not processor.take_telemetry(topic, payload, received_at, ack):
                lanes.submit(topic, payload, received_at, ack, retained)

        gateway.on_message = on_message
        runtime.extras.update(
            gateway=gateway,
            downlink=downlink,
            ejects=ejects,
            processor=processor,
            lanes=lanes,
            throttle=throttle,
            device_ca=load_device_ca(settings.device_ca_cert_file, settings.device_ca_key_file),
            telemetry=telemetry,
            snapshots=snapshots,
            rules=rules,
            task_rules=task_rules,
        )
        light_rules = LightRules(
            user_light_s=settings.user_light_s,
            max_distance_m=settings.light_max_distance_m,
            user_limit=settings.user_light_limit,
            user_window_s=settings.user_light_window_s,
            schedule_every_s=settings.night_light_check_s,
        )
        light_schedule = Alarm()
        screen_sync = Alarm()  # rung when a newer ad playlist is stored
        runtime.extras.update(
            light_rules=light_rules, light_schedule=light_schedule, screen_sync=screen_sync, firmware=firmware_context
        )
        runtime.readiness_checks["mqtt"] = gateway.ready
        runtime.spawn(gateway.run(), "mqtt-gateway")

        async def expire_commands() -> datetime | None:
            return await fail_expired_commands(ejects)

        async def mark_silent_cabinets() -> datetime | None:
            return await mark_offline_until_next(
                runtime.sessionmaker, publish, settings.offline_after_s, lambda: telemetry.behind_s
            )

        async def sweep_bank_modules() -> None:
            await sweep_banks(
                runtime.sessionmaker,
                publish,
                offline_after_s=settings.bank_offline_after_s,
                position_max_age_s=settings.bank_position_max_age_s,
            )

        # Woken at each command's deadline; the interval finds commands of a replica that stopped.
        runtime.spawn(
            run_periodically(
                expire_commands,
                name="command-deadlines",
                interval_s=settings.command_sweep_interval_s,
                alarm=ejects.deadlines,
                min_gap_s=settings.command_sweep_min_gap_s,
            ),
            "command-deadlines",
        )
        # Sleeps until the next online cabinet would fall silent (the job says when), or the interval; an
        # interval below offline_after_s sees a cabinet that came online meanwhile before it is due.
        offline_check_s = min(settings.offline_sweep_interval_s, settings.offline_after_s / 2)
        runtime.spawn(
            run_periodically(mark_silent_cabinets, name="offline-sweeper", interval_s=offline_check_s),
            "offline-sweeper",
        )

        async def night_light() -> datetime | None:
            await run_schedule(runtime.sessionmaker, downlink, light_rules, datetime.now(UTC))
            return None

        runtime.spawn(
            run_periodically(
                night_light, name="night-light", interval_s=settings.night_light_check_s, alarm=light_schedule
            ),
            "night-light",
        )

        async def sync_screens() -> datetime | None:
            await screens.sync(runtime.sessionmaker, downlink, datetime.now(UTC))
            return None

        # The interval sends cabinets their shorter list once an ad ended, and retries one not sent.
        runtime.spawn(
            run_periodically(
                sync_screens, name="screen-sync", interval_s=settings.screen_sync_interval_s, alarm=screen_sync
            ),
            "screen-sync",
        )

        async def firmware_rollouts() -> datetime | None:
            await firmware.sweep(runtime.sessionmaker, firmware_context, downlink, datetime.now(UTC))
            return None

        # Rung when a rollout is created or resumed and when a cabinet's update ends; the interval times out
        # silent cabinets and picks up rollouts of a replica that stopped.
        runtime.spawn(
            run_periodically(
                firmware_rollouts,
                name="firmware-rollouts",
                interval_s=settings.firmware_sweep_interval_s,
                alarm=firmware_context.sweep,
            ),
            "firmware-rollouts",
        )

        async def sweep_throttle() -> None:
            throttle.sweep()

        if throttle.enabled:
            runtime.spawn(
                run_periodically(sweep_throttle, name="device-throttle", interval_s=settings.device_throttle_sweep_s),
                "device-throttle",
            )
        runtime.spawn(telemetry.run(), "telemetry-ingest")
        runtime.spawn(snapshots.run(), "state-ingest")
        runtime.spawn(
            run_periodically(sweep_bank_modules, name="bank-sweeper", interval_s=settings.freshness_sweep_interval_s),
            "bank-sweeper",
        )

        async def open_maintenance_tasks() -> None:
            async with unit_of_work(runtime.sessionmaker) as session:
                await maintenance.open_tasks(session, runtime, task_rules)

        runtime.spawn(
            run_periodically(
                open_maintenance_tasks, name="maintenance-tasks", interval_s=settings.maintenance_scan_interval_s
            ),
            "maintenance-tasks",
        )

        async def forget_old_message_ids() -> None:
            await prune_inbound_messages(
                runtime.sessionmaker,
                keep_s=settings.inbound_retention_s,
                batch=settings.retention_batch,
                max_batches=settings.retention_max_batches,
            )

        if settings.retention_interval_s > 0:
            runtime.spawn(
                run_periodically(
                    forget_old_message_ids,
                    name="inbound-retention",
                    interval_s=settings.retention_interval_s,
                    run_at_start=False,
                ),
                "inbound-retention",
            )
        try:
            yield
        finally:
            await lanes.close()
            await telemetry.close()
            await snapshots.close()

    return create_service_app(
        settings,
        title="device-svc",
        routers=[
            faults_router,
            geo_router,
            lighting_router,
            rented_router,  # /v1/banks/rented-by-me before /v1/banks/{id}
            registry_router,
            ops_router,
            maintenance_router,
            firmware_router,
            admin_router,
            certificates_router,
        ],  # geo first: /cabinets/nearby before /cabinets/{id}
        consumers=consumer_specs,
        extra_lifespan=device_lifespan,
    )
