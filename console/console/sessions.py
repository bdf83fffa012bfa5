"""Staff sessions, held server-side: the browser gets only an opaque id in an HttpOnly, SameSite=Strict
cookie; the staff member's access token never leaves this process (no token in a URL, in local storage
or anywhere script can read it). The access token is short-lived and refreshed silently with the
session's refresh token (web.current_staff), which also stays here. A session ends after
`console_idle_timeout_s` without a request, when its tokens can no longer be refreshed, or at sign-out.

The store is this process's memory: one console process per deployment, and a restart signs everyone
out. Several replicas would need a shared store."""

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from kit.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS

COOKIE = "pb_console"
LOGIN_CSRF_COOKIE = "pb_console_login"
# Tokens are refused by the services a little before they expire here, so a page never half-loads.
EXPIRY_MARGIN_S = 15


@dataclass
class StaffSession:
    session_id: str
    admin_id: str
    login: str
    roles: list[str]
    access_token: str
    token_expires_at: float
    csrf_token: str
    lang: str
    last_seen: float
    # What user-svc requires before the account may work (`password_change`, `totp_enrolment`): the
    # token then holds no role, and the console opens only the own-account page.
    pending: tuple[str, ...] = ()
    refresh_token: str | None = None
    refresh_expires_at: float = 0.0
    # One refresh at a time: two requests presenting the same refresh token would look like a stolen
    # token to user-svc, which then ends the session.
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def alive(self, now: float, idle_timeout_s: int) -> bool:
        if now - self.last_seen > idle_timeout_s:
            return False
        return now < self.token_expires_at or (self.refresh_token is not None and now < self.refresh_expires_at)

    def refreshed(self, access_token: str, expires_in: int, refresh_token: str | None, refresh_expires_in: int) -> None:
        now = time.monotonic()
        self.access_token = access_token
        self.token_expires_at = now + expires_in - EXPIRY_MARGIN_S
        self.refresh_token = refresh_token
        self.refresh_expires_at = now + refresh_expires_in - EXPIRY_MARGIN_S

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles))

    def can(self, permission: str) -> bool:
        granted = self.permissions
        return permission in granted or ALL_PERMISSIONS in granted


class SessionStore:
    def __init__(self, idle_timeout_s: int) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, StaffSession] = {}

    def create(
        self,
        *,
        admin_id: str,
        login: str,
        roles: list[str],
        access_token: str,
        expires_in: int,
        lang: str,
        pending: tuple[str, ...] = (),
        refresh_token: str | None = None,
        refresh_expires_in: int = 0,
    ) -> StaffSession:
        self._purge()
        now = time.monotonic()
        session = StaffSession(
            session_id=secrets.token_urlsafe(32),
            admin_id=admin_id,
            login=login,
            roles=roles,
            access_token=access_token,
            token_expires_at=now + expires_in - EXPIRY_MARGIN_S,
            csrf_token=secrets.token_urlsafe(32),
            lang=lang,
            last_seen=now,
            pending=pending,
            refresh_token=refresh_token,
            refresh_expires_at=now + refresh_expires_in - EXPIRY_MARGIN_S,
        )
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> StaffSession | None:
        """The live session with this id (its idle clock restarted), or None when unknown or expired."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if not session.alive(now, self.idle_timeout_s):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def peek(self, session_id: str | None) -> StaffSession | None:
        """The live session with this id, without restarting its idle clock (a page's live updates are
        not the staff member's activity)."""
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if not session.alive(time.monotonic(), self.idle_timeout_s):
            del self._sessions[session.session_id]
            return None
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _purge(self) -> None:
        now = time.monotonic()
        for sid, s in list(self._sessions.items()):
            if not s.alive(now, self.idle_timeout_s):
                del self._sessions[sid]
