"""Every service guards its routes the same way (T/CA006-2018 6.3.1, issue 3): administrative and
operations routes check a permission from the one shared role table (`kit.auth.require_permission`,
or user-svc's admin-only variant), never a role name of their own; and every route a user's token
can reach declares the user scope an application acting for that user needs (or none, so
applications are refused there). Every route counts against a rate limit and caps its page size
(issue 15). Reads the routes of the real apps; nothing is started."""

import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from annotated_types import Le, Lt
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from kit.auth import ROLE_PERMISSIONS, STAFF_PATH_PREFIXES, SUPERVISION_SCOPE, Principal, UserScope
from kit.ratelimit import EXEMPT, RateClass, enforce_rate_limit

SERVICES = ["user_svc", "device_svc", "billing_svc", "asset_credit_svc", "notify_svc", "analytics_svc"]
STAFF_PREFIXES = STAFF_PATH_PREFIXES
# administrators log in here, and trade a refresh token (the token is the credential)
PUBLIC_STAFF_ROUTES = {("POST", "/v1/admin/sessions"), ("POST", "/v1/admin/sessions/refresh")}
OWN_ACCOUNT_PREFIX = "/v1/admin/me"  # user-svc's `signed_in_admin`: password, second factor, own sessions
KNOWN_PERMISSIONS = set().union(*ROLE_PERMISSIONS.values()) | {"clients:manage", "admins:manage", "audit:read"}


def _app(package: str) -> FastAPI:
    module = importlib.import_module(f"{package}.main")
    settings = importlib.import_module(f"{package}.settings").Settings(pb_env="test")
    app: FastAPI = module.create_app(settings)
    return app


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _guards(route: APIRoute) -> set[str]:
    names = set()
    for call in _calls(route.dependant):
        qualname = getattr(call, "__qualname__", "")
        if qualname.startswith(("require_permission.", "admin_with.")):
            names.add("permission")
        elif qualname.startswith("require_roles."):
            names.add("role")
        elif qualname == "signed_in_admin":
            names.add("self")
    return names


def _permissions(route: APIRoute) -> set[str]:
    found: set[str] = set()
    for call in _calls(route.dependant):
        closure = getattr(call, "__closure__", None) or ()
        if getattr(call, "__qualname__", "").startswith(("require_permission.", "admin_with.")):
            found.update(c.cell_contents for c in closure if isinstance(c.cell_contents, str))
    return found


def _flatten(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        router = getattr(route, "original_router", None)  # FastAPI keeps included routers nested
        if router is not None:
            assert not getattr(route.include_context, "prefix", ""), "include prefixes are not followed here"
            yield from _flatten(router.routes)


def _routes(package: str) -> list[APIRoute]:
    routes = list(_flatten(_app(package).routes))
    assert routes, f"no routes found in {package}"
    return routes


@pytest.mark.parametrize("package", SERVICES)
def test_staff_routes_check_a_shared_permission(package: str) -> None:
    staff = [
        r
        for r in _routes(package)
        if r.path.startswith(STAFF_PREFIXES) and not {(m, r.path) for m in r.methods or ()} & PUBLIC_STAFF_ROUTES
    ]
    problems = []
    for route in staff:
        guards = _guards(route)
        if route.path.startswith(OWN_ACCOUNT_PREFIX) and guards == {"self"}:
            continue  # an administrator's own account: any staff session, a restricted one too
        if "permission" not in guards or "role" in guards:
            problems.append(f"{sorted(route.methods or ())} {route.path}: {sorted(guards) or 'unguarded'}")
        unknown = _permissions(route) - KNOWN_PERMISSIONS
        if unknown:
            problems.append(f"{route.path}: permission {sorted(unknown)} is in no role")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", SERVICES)
def test_user_routes_declare_their_scope_or_refuse_applications(package: str) -> None:
    declared: dict[str, set[str]] = {}
    for route in _routes(package):
        scopes = {d.dependency.scope for d in route.dependencies if isinstance(d.dependency, UserScope)}
        if scopes:
            assert not route.path.startswith(STAFF_PREFIXES), f"{route.path} is a staff route with a user scope"
            declared[route.path] = scopes
    # Every service a user talks to exposes something to applications acting for users.
    if package != "analytics_svc":
        assert declared, f"{package} declares no user scope at all"


@pytest.mark.parametrize(
    ("package", "method", "path", "permission"),
    [
        ("notify_svc", "GET", "/v1/admin/tickets", "tickets:read"),
        ("notify_svc", "GET", "/v1/admin/tickets/{ticket_id}", "tickets:read"),
        ("notify_svc", "POST", "/v1/admin/tickets/{ticket_id}/assign", "tickets:manage"),
        ("notify_svc", "POST", "/v1/admin/tickets/{ticket_id}/replies", "tickets:manage"),
        ("notify_svc", "POST", "/v1/admin/tickets/{ticket_id}/notes", "tickets:manage"),
        ("notify_svc", "POST", "/v1/admin/tickets/{ticket_id}/resolve", "tickets:manage"),
        ("notify_svc", "POST", "/v1/admin/notices", "notices:send"),
        ("notify_svc", "POST", "/v1/admin/notices/{notice_id}/images", "notices:send"),
        ("notify_svc", "POST", "/v1/admin/notices/{notice_id}/publish", "notices:send"),
        ("device_svc", "POST", "/v1/ops/banks/{bank_id}/fault-reports/clear", "devices:maintain"),
        ("device_svc", "GET", "/v1/ops/fault-reports", "devices:read"),
        ("device_svc", "GET", "/v1/ops/tasks", "devices:read"),
        ("device_svc", "POST", "/v1/ops/tasks/{task_id}/assign", "maintenance:dispatch"),
        ("device_svc", "POST", "/v1/ops/tasks/{task_id}/cancel", "maintenance:dispatch"),
        ("device_svc", "POST", "/v1/ops/tasks/{task_id}/start", "devices:maintain"),
        ("device_svc", "POST", "/v1/ops/tasks/{task_id}/done", "devices:maintain"),
        ("analytics_svc", "POST", "/v1/admin/webhooks", "partners:manage"),
        ("analytics_svc", "POST", "/v1/admin/webhooks/deliveries/{delivery_id}/replay", "partners:manage"),
        ("analytics_svc", "PUT", "/v1/admin/webhooks/partners/{partner}", "partners:manage"),
    ],
)
def test_customer_service_staff_routes_check_their_permission(package: str, method: str, path: str, permission: str):
    """The support and notice routes (issue 10) are staff routes the test above walks, with these permissions."""
    route = next((r for r in _routes(package) if r.path == path and method in (r.methods or ())), None)
    assert route is not None, f"{method} {path} is not a route of {package}"
    assert _permissions(route) == {permission}


@pytest.mark.parametrize("package", SERVICES)
def test_supervision_routes_answer_regulators_only(package: str) -> None:
    """The supervision interface (clause 5) is guarded by `require_regulator` and nothing that an
    administrator's role could open; a regulator's scopes hold no permission of the role table."""
    routes = [r for r in _routes(package) if r.path.startswith("/v1/supervision")]
    for route in routes:
        qualnames = {getattr(call, "__qualname__", "") for call in _calls(route.dependant)}
        assert any(q.startswith("require_regulator.") for q in qualnames), route.path
        assert not _guards(route), f"{route.path}: {_guards(route)}"
    if package == "analytics_svc":
        assert {r.path for r in routes} >= {
            "/v1/supervision/trips",
            "/v1/supervision/vehicles",
            "/v1/supervision/vehicles/status",
            "/v1/supervision/stops",
            "/v1/supervision/events/historical",
            "/v1/supervision/events/recent",
            "/v1/supervision/reports",
        }
    regulator = Principal("key", kind="client", scopes=frozenset({SUPERVISION_SCOPE, "supervision:region:440300"}))
    assert not any(regulator.can(p) for p in KNOWN_PERMISSIONS)


def _query_params(dependant: Dependant) -> Iterator[Any]:
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_params(sub)


@pytest.mark.parametrize("package", SERVICES)
def test_page_sizes_are_capped(package: str) -> None:
    """A page size (`limit`, `*_limit`) has an upper bound (`le=`), so a larger one is a 422 rather than a
    query that reads a whole table (issue 15, OWASP API4)."""
    unbounded = [
        f"{sorted(route.methods or ())} {route.path} ?{param.alias}"
        for route in _routes(package)
        for param in _query_params(route.dependant)
        if param.alias == "limit" or param.alias.endswith("_limit")
        if not any(isinstance(m, Le | Lt) for m in param.field_info.metadata)
    ]
    assert not unbounded, "\n".join(unbounded)


@pytest.mark.parametrize("package", SERVICES)
def test_every_route_counts_against_a_rate_limit(package: str) -> None:
    """The kit's rate limit is an app-wide dependency (kit.app: every included route runs it first); only
    the operations probes declare themselves exempt (issue 15)."""
    app = _app(package)
    assert [d.dependency for d in app.router.dependencies] == [enforce_rate_limit]
    for route in _flatten(app.routes):
        declared = [d.dependency.name for d in route.dependencies if isinstance(d.dependency, RateClass)]
        if EXEMPT in declared:
            assert route.path in {"/livez", "/readyz", "/metrics"}, route.path


# user-svc's staff actions record their audit entry in the service layer, with before/after
# (user_svc.admins.audit.record; tests in user-svc test_staff), not through the route dependency.
AUDITED_IN_SERVICE = {
    "user_svc.admins.endpoints.block_user",
    "user_svc.admins.endpoints.unblock_user",
    "user_svc.admins.endpoints.create_admin",
    "user_svc.staff.endpoints.change_role",
    "user_svc.staff.endpoints.disable_admin",
    "user_svc.staff.endpoints.enable_admin",
    "user_svc.staff.endpoints.reset_password",
    "user_svc.staff.endpoints.reset_totp",
    "user_svc.staff.endpoints.revoke_admin_session",
    "user_svc.clients.endpoints.create_api_key",
    "user_svc.clients.endpoints.revoke_api_key",
    "user_svc.oauth.endpoints.register_client",
    "user_svc.oauth.endpoints.disable_client",
}
READS_BY_POST = {"notify_svc.campaigns.endpoints.preview"}  # a segment's count: a body, nothing changed


@pytest.mark.parametrize("package", SERVICES)
def test_staff_routes_that_change_state_record_an_audit_entry(package: str) -> None:
    """Every staff route with a write method (under /v1/admin or /v1/ops, guarded by a permission) declares
    `kit.audit.audited(...)`, which writes the audit trail event in the request's transaction (issue 15,
    T/CA006-2018 6.3.1); user-svc's own account routes and the staff login are not staff actions on others."""
    missing = []
    for route in _routes(package):
        writes = (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}
        if not writes or not route.path.startswith(STAFF_PREFIXES) or "permission" not in _guards(route):
            continue
        qualnames = {getattr(call, "__qualname__", "") for call in _calls(route.dependant)}
        endpoint = f"{route.endpoint.__module__}.{route.endpoint.__name__}"
        if not any(q.startswith("audited.") for q in qualnames) and endpoint not in AUDITED_IN_SERVICE | READS_BY_POST:
            missing.append(f"{sorted(writes)} {route.path} ({endpoint})")
    assert not missing, "staff writes without an audit entry:\n" + "\n".join(missing)


# An endpoint that records what it changed itself, through `CurrentAudit` (kit.audit.audited without `state`).
RECORDS_CHANGES = re.compile(r"\.(changed|created)\(|\bbefore=|\bafter=|_sent\(audit|_imported\(audit")


def _audited(route: APIRoute) -> Callable[..., Any] | None:
    return next((c for c in _calls(route.dependant) if getattr(c, "__qualname__", "").startswith("audited.")), None)


@pytest.mark.parametrize("package", SERVICES)
def test_audit_entries_say_what_changed(package: str) -> None:
    """Every audited staff route records its target's state before and after (issue 15, 6.3.1): it declares
    `audited(..., state=...)` (the kit reads the target before and after the endpoint and records the fields
    that differ), or its endpoint records before/after itself through `CurrentAudit` (actions on many
    targets or on no row: imports, commands sent, scans). So no staff write can be added without it."""
    missing = []
    for route in _routes(package):
        dependency = _audited(route)
        if dependency is None or getattr(dependency, "state", None) is not None:
            continue
        source = inspect.getsource(route.endpoint)
        if not RECORDS_CHANGES.search(source):
            missing.append(f"{sorted(route.methods or ())} {route.path} ({route.endpoint.__module__})")
    assert not missing, "audited routes recording no before/after:\n" + "\n".join(missing)


def test_user_svc_staff_changes_record_before_and_after() -> None:
    """user-svc records its staff actions in the service layer (AUDITED_IN_SERVICE): a change goes through
    `audit.record_change`, whose `before` and `after` are required; plain `audit.record` (neither) is left to
    the staff reads (a search, a profile viewed or revealed), so a write cannot slip in without them."""
    import ast
    from pathlib import Path

    import user_svc

    reads = {
        route.endpoint.__name__
        for route in _routes("user_svc")
        if route.path.startswith(STAFF_PREFIXES) and (route.methods or set()) <= {"GET", "HEAD"}
    }
    root = Path(user_svc.__file__).parent
    misplaced = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            for node in ast.walk(function):
                call = node.func if isinstance(node, ast.Call) else None
                records = (
                    isinstance(call, ast.Attribute) and call.attr == "record" and ast.unparse(call.value) == "audit"
                )
                if records and function.name not in reads:
                    misplaced.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)} in {function.name}")
    assert not misplaced, "staff changes recorded without before/after (use audit.record_change):\n" + "\n".join(
        misplaced
    )
