"""Calls to the services' APIs with the signed-in staff member's own token, so every service applies
its own permission checks: the console shows, the services decide."""

from dataclasses import dataclass
from typing import Any

import httpx

from console.settings import ConsoleSettings


class BackendError(Exception):
    """A service refused or failed; carries its problem+json code for the page to show."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class SessionExpired(BackendError):
    """The services no longer accept this token (expired or revoked): the staff member signs in again."""


@dataclass(frozen=True)
class Services:
    user: str
    device: str
    billing: str
    asset: str
    notify: str
    analytics: str

    @classmethod
    def from_settings(cls, s: ConsoleSettings) -> "Services":
        return cls(
            user=s.user_svc_url.rstrip("/"),
            device=s.device_svc_url.rstrip("/"),
            billing=s.billing_svc_url.rstrip("/"),
            asset=s.asset_svc_url.rstrip("/"),
            notify=s.notify_svc_url.rstrip("/"),
            analytics=s.analytics_svc_url.rstrip("/"),
        )


def _problem(response: httpx.Response) -> BackendError:
    code, detail = "http_error", response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        detail = str(body.get("detail") or body.get("title") or detail)
    if response.status_code == 401:
        return SessionExpired(401, code, detail)
    return BackendError(response.status_code, code, detail)


class Backend:
    def __init__(self, http: httpx.AsyncClient, services: Services) -> None:
        self.http = http
        self.services = services

    async def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Any:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            response = await self.http.request(method, url, headers=headers, params=params, json=json, content=content)
        except httpx.HTTPError as exc:
            raise BackendError(503, "service_unavailable", f"{url.split('/v1/')[0]}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def get(self, url: str, token: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
        return await self.call("GET", url, token=token, params=clean)

    async def post(self, url: str, token: str, body: Any = None) -> Any:
        return await self.call("POST", url, token=token, json=body if body is not None else {})
