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
    DISPUTES = "billing.disputes.v1"  # key: rental_id (a user disputed a rental; support resolved it)
    WALLETS = "asset.wallets.v1"  # key: user_id
    PAYMENTS = "asset.payments.v1"  # key: user_id
    CREDIT = "asset.credit.v1"  # key: user_id (a user's credit score and level after each change, deposit-free)
    COUPONS = "asset.coupons.v1"  # key: user_id (a coupon issued to a user, and each change of its state)
    DEPOSITS = "asset.deposits.v1"  # key: user_id (deposits paid, refunds requested and paid)
    DEVICE_FAULTS = "device.faults.v1"  # key: bank_id (a user-reported fault cleared by staff)
    FAULT_REPORTS = "notify.reports.v1"  # key: bank_id (user reports about a bank, for device-svc)
    TICKETS = "notify.tickets.v1"  # key: ticket_id (support tickets: opened, status changes, overdue alerts)
    NOTICES = "notify.notices.v1"  # key: notice_id (system and operations notices published to users)
    VAS_CONSENTS = "notify.vas.v1"  # key: user_id (value-added service risk notices accepted, withdrawn)
    ADS = "notify.ads.v1"  # key: ad slot (the cabinet screens' playlist after each change)
    HOTSPOTS = "analytics.hotspots.v1"  # key: H3 cell (a cell ran dry or full, cleared; rebalancing suggestions)
    MAINTENANCE = "device.maintenance.v1"  # key: task_id (maintenance tasks for field staff: opened, status changes)
    FIRMWARE = "device.firmware.v1"  # key: rollout_id (firmware rollouts and each cabinet's update in them)
    DEVICE_SCREENS = "device.screens.v1"  # key: cabinet_id (what cabinet screens played: ad play counts)
    STAFF_AUDIT = "audit.staff.v1"  # key: actor id (every staff action in every service; user-svc keeps the trail)


ALL_TOPICS: tuple[str, ...] = tuple(t.value for t in Topic)

# What each topic's message key is (the entity whose events stay in order on one partition).
TOPIC_KEYS: dict[Topic, str] = {
    Topic.USERS: "user id",
    Topic.USER_COMMANDS: "user id",
    Topic.SESSIONS: "user id",
    Topic.DEVICE_COMMANDS: "the scanned code (a bank's or a cabinet's id)",
    Topic.DEVICE_EJECTS: "cabinet id (the scanned code when no cabinet is known)",
    Topic.DEVICE_RETURNS: "bank id",
    Topic.DEVICE_STATUS: "device id (cabinet or bank)",
    Topic.DEVICE_TELEMETRY: "device id",
    Topic.DEVICE_REJECTIONS: "device id",
    Topic.RENTALS: "rental id",
    Topic.CHARGES: "user id",
    Topic.DISPUTES: "rental id",
    Topic.WALLETS: "user id",
    Topic.PAYMENTS: "user id",
    Topic.DEPOSITS: "user id",
    Topic.CREDIT: "user id",
    Topic.COUPONS: "user id",
    Topic.DEVICE_FAULTS: "bank id",
    Topic.FAULT_REPORTS: "bank id",
    Topic.TICKETS: "ticket id",
    Topic.NOTICES: "notice id",
    Topic.VAS_CONSENTS: "user id",
    Topic.ADS: "ad slot (`cabinet_screen`)",
    Topic.HOTSPOTS: "H3 cell (resolution 8)",
    Topic.MAINTENANCE: "maintenance task id",
    Topic.FIRMWARE: "firmware rollout id",
    Topic.DEVICE_SCREENS: "cabinet id",
    Topic.STAFF_AUDIT: "the acting staff member's id",
}

# Topics whose volume grows with the fleet, not with rentals: telemetry, presence and status, refused
# device messages. Producers relay them on a lane of their own, so that a backlog of them (a connect
# storm, a telemetry flood) never delays a rental's events on their way to Kafka.
BULK_TOPICS: frozenset[str] = frozenset({Topic.DEVICE_TELEMETRY, Topic.DEVICE_STATUS, Topic.DEVICE_REJECTIONS})


def main() -> None:
    for name in ALL_TOPICS:
        print(name)


if __name__ == "__main__":
    main()
