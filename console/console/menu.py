"""The menu, one item per page, each with the permission its page needs (the same names the services
check). An item whose permission the staff member lacks is not shown, and its page answers 403; the
service behind it would refuse anyway."""

from dataclasses import dataclass


@dataclass(frozen=True)
class MenuItem:
    key: str  # catalogue key of its label, also the page's name
    href: str
    permission: str | None  # None: every staff member


MENU: tuple[MenuItem, ...] = (
    MenuItem("nav.dashboard", "/", None),
    MenuItem("nav.map", "/map", "devices:read"),
    MenuItem("nav.cabinets", "/cabinets", "devices:read"),
    MenuItem("nav.banks", "/banks", "devices:read"),
    MenuItem("nav.alarms", "/alarms", "devices:read"),
    MenuItem("nav.tasks", "/tasks", "devices:read"),
    MenuItem("nav.tickets", "/tickets", "tickets:read"),
    MenuItem("nav.users", "/users", "users:read"),
    MenuItem("nav.disputes", "/disputes", "rentals:support"),
    MenuItem("nav.pricing", "/pricing", "pricing:manage"),
    MenuItem("nav.coupons", "/coupons", "assets:manage"),
    MenuItem("nav.finance", "/finance", "ledger:read"),
    MenuItem("nav.reconciliation", "/reconciliation", "ledger:read"),
    MenuItem("nav.notices", "/notices", "notices:send"),
    MenuItem("nav.campaigns", "/campaigns", "campaigns:manage"),
    MenuItem("nav.ads", "/ads", "ads:manage"),
    MenuItem("nav.vas", "/vas", "vas:manage"),
    MenuItem("nav.staff", "/staff", "admins:manage"),
    MenuItem("nav.audit", "/audit", "audit:read"),
)

PAGE_PERMISSION: dict[str, str | None] = {item.key: item.permission for item in MENU}
