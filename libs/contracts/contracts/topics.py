"""Kafka topic names: `<domain>.<event-or-entity>.v<N>`, each keyed by the entity id named here."""

from enum import StrEnum


class Topic(StrEnum):
    USERS = "user.users.v1"  # key: user_id
    USER_COMMANDS = "user.commands.v1"  # key: user_id (commands to user-svc: texts to the user's phone)
    SESSIONS = "user.sessions.v1"  # key: user_id (access-token revocations; every service's every replica reads it)
    DEVICE_COMMANDS = "device.commands.v1"  # key: scanned code (commands to device-svc)
    DEVICE_EJECTS = "device.ejects.v1"  # key: cabinet_id
    DEVICE_RETURNS = "device.returns.v1"  # key: bank_id
    DEVICE_STATUS = "device.status.v1"  # key: device_id (online/offline, inventory)
    DEVICE_TELEMETRY = "device.telemetry.v1"  # key: device_id (data team feed)
    DEVICE_REJECTIONS = "device.rejections.v1"  # key: device_id (refused device messages)
    RENTALS = "billing.rentals.v1"  # key: rental_id
    CHARGES = "billing.charges.v1"  # key: user_id
    WALLETS = "asset.wallets.v1"  # key: user_id
    PAYMENTS = "asset.payments.v1"  # key: user_id
    DEVICE_FAULTS = "device.faults.v1"  # key: bank_id (a user-reported fault cleared by staff)
    FAULT_REPORTS = "notify.reports.v1"  # key: bank_id (user reports about a bank, for device-svc)
    TICKETS = "notify.tickets.v1"  # key: ticket_id (support tickets: opened, status changes, overdue alerts)
    NOTICES = "notify.notices.v1"  # key: notice_id (system and operations notices published to users)
    MAINTENANCE = "device.maintenance.v1"  # key: task_id (maintenance tasks for field staff: opened, status changes)


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic)

# Topics whose volume grows with the fleet, not with rentals: telemetry, presence and status, refused
# device messages. Producers relay them on a lane of their own, so that a backlog of them (a connect
# storm, a telemetry flood) never delays a rental's events on their way to Kafka.
BULK_TOPICS: frozenset[str] = frozenset({Topic.DEVICE_TELEMETRY, Topic.DEVICE_STATUS, Topic.DEVICE_REJECTIONS})


def main() -> None:
    for name in ALL_TOPICS:
        print(name)


if __name__ == "__main__":
    main()
