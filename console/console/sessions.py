"""Staff sessions, held server-side in the console's own PostgreSQL database, so every console replica
knows every sign-in and a sign-out (or an idle timeout, or a refused refresh) ends the session on all
of them at once. The browser gets only an opaque id in an HttpOnly, SameSite=Strict cookie; the table
keys sessions by the id's SHA-256 (a copy of the table gives no cookie) and keeps the staff member's
access and refresh tokens encrypted (AES-GCM under CONSOLE_SESSION_KEY). No token in a URL, in local
storage or anywhere script can read it.

A session ends after `idle_timeout_s` without a request, when its tokens can no longer be refreshed,
or at sign-out. The silent refresh (web.keep_fresh) holds the session's row lock while it trades the
refresh token, so two replicas never present the same refresh token (user-svc would take that for a
stolen token and end the session)."""

import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from console.models import console_sessions
from console.problems import Problem
from kit.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS

COOKIE = "pb_console"
LOGIN_CSRF_COOKIE = "pb_console_login"
# Tokens are refused by the services a little before they expire here, so a page never half-loads.
EXPIRY_MARGIN_S = 15
# A request moves the idle clock; writing it more often than this would be a write per page for nothing.
TOUCH_EVERY_S = 10


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StaffSession:
    session_id: str
    admin_id: str
    login: str
    roles: list[str]
    access_token: str
    token_expires_at: datetime
    csrf_token: str
    lang: str
    last_seen: datetime
    # What user-svc requires before the account may work (`password_change`, `totp_enrolment`): the
    # token then holds no role, and the console opens only the own-account page.
    pending: tuple[str, ...] = ()
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None
    # A form's refusal, shown once on the next page (console.problems).
    problem: Problem | None = None

    def alive(self, at: datetime, idle_timeout_s: int) -> bool:
        if at - self.last_seen > timedelta(seconds=idle_timeout_s):
            return False
        if at < self.token_expires_at:
            return True
        return self.refresh_token is not None and self.refresh_expires_at is not None and at < self.refresh_expires_at

    def seconds_left(self) -> float:
        return (self.token_expires_at - now()).total_seconds()

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles))

    def can(self, permission: str) -> bool:
        granted = self.permissions
        return permission in granted or ALL_PERMISSIONS in granted


def _key_of(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _expiry(seconds: int) -> datetime:
    return now() + timedelta(seconds=seconds - EXPIRY_MARGIN_S)


class SessionStore:
    def __init__(self, engine: AsyncEngine, idle_timeout_s: int, secret: str) -> None:
        self.engine = engine
        self.idle_timeout_s = idle_timeout_s
        self._aead = AESGCM(hashlib.sha256(b"pb-console-sessions\x00" + secret.encode()).digest())

    def _seal(self, access_token: str, refresh_token: str | None) -> bytes:
        nonce = os.urandom(12)
        plain = json.dumps({"a": access_token, "r": refresh_token}).encode()
        return nonce + self._aead.encrypt(nonce, plain, b"console-session")

    def _open(self, sealed: bytes) -> tuple[str, str | None]:
        tokens = json.loads(self._aead.decrypt(sealed[:12], sealed[12:], b"console-session"))
        return str(tokens["a"]), tokens["r"]

    def _session(self, session_id: str, row: Any) -> StaffSession:
        access, refresh = self._open(row.tokens)
        return StaffSession(
            session_id=session_id,
            admin_id=row.admin_id,
            login=row.login,
            roles=list(row.roles),
            access_token=access,
            token_expires_at=row.token_expires_at,
            csrf_token=row.csrf_token,
            lang=row.lang,
            last_seen=row.last_seen_at,
            pending=tuple(row.pending),
            refresh_token=refresh,
            refresh_expires_at=row.refresh_expires_at,
            problem=Problem.of(row.problem) if row.problem else None,
        )

    async def create(
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
        session_id = secrets.token_urlsafe(32)
        at = now()
        values = {
            "id_hash": _key_of(session_id),
            "admin_id": admin_id,
            "login": login,
            "roles": roles,
            "lang": lang,
            "pending": list(pending),
            "csrf_token": secrets.token_urlsafe(32),
            "tokens": self._seal(access_token, refresh_token),
            "token_expires_at": _expiry(expires_in),
            "refresh_expires_at": _expiry(refresh_expires_in) if refresh_token else None,
            "created_at": at,
            "last_seen_at": at,
        }
        async with self.engine.begin() as db:
            await self._purge(db)
            await db.execute(console_sessions.insert().values(values))
        found = await self.peek(session_id)
        assert found is not None
        return found

    async def get(self, session_id: str | None) -> StaffSession | None:
        """The live session with this id (its idle clock restarted), or None when unknown or expired."""
        session = await self.peek(session_id)
        if session is None:
            return None
        at = now()
        if at - session.last_seen > timedelta(seconds=TOUCH_EVERY_S):
            async with self.engine.begin() as db:
                await db.execute(
                    update(console_sessions)
                    .where(console_sessions.c.id_hash == _key_of(session.session_id))
                    .values(last_seen_at=at)
                )
            session.last_seen = at
        return session

    async def peek(self, session_id: str | None) -> StaffSession | None:
        """The live session with this id, without restarting its idle clock (a page's live updates are
        not the staff member's activity)."""
        if not session_id or len(session_id) > 128:
            return None
        async with self.engine.connect() as db:
            row = (
                await db.execute(select(console_sessions).where(console_sessions.c.id_hash == _key_of(session_id)))
            ).first()
        if row is None:
            return None
        session = self._session(session_id, row)
        if not session.alive(now(), self.idle_timeout_s):
            await self.end(session_id)
            return None
        return session

    @asynccontextmanager
    async def locked(self, session: StaffSession) -> AsyncIterator[tuple[StaffSession | None, AsyncConnection]]:
        """The session as it is now, its row locked until the block ends (across every replica)."""
        async with self.engine.begin() as db:
            row = (
                await db.execute(
                    select(console_sessions)
                    .where(console_sessions.c.id_hash == _key_of(session.session_id))
                    .with_for_update()
                )
            ).first()
            yield (self._session(session.session_id, row) if row is not None else None), db

    async def refreshed(
        self,
        db: AsyncConnection,
        session: StaffSession,
        *,
        access_token: str,
        expires_in: int,
        refresh_token: str | None,
        refresh_expires_in: int,
        roles: list[str],
    ) -> None:
        """New tokens from user-svc, written inside `locked`'s transaction."""
        session.access_token, session.refresh_token, session.roles = access_token, refresh_token, roles
        session.token_expires_at = _expiry(expires_in)
        session.refresh_expires_at = _expiry(refresh_expires_in) if refresh_token else None
        await db.execute(
            update(console_sessions)
            .where(console_sessions.c.id_hash == _key_of(session.session_id))
            .values(
                tokens=self._seal(access_token, refresh_token),
                token_expires_at=session.token_expires_at,
                refresh_expires_at=session.refresh_expires_at,
                roles=roles,
            )
        )

    async def set_lang(self, session: StaffSession, lang: str) -> None:
        session.lang = lang
        await self._update(session.session_id, lang=lang)

    async def set_problem(self, session_id: str, problem: Problem) -> None:
        await self._update(session_id, problem=problem.as_dict())

    async def take_problem(self, session: StaffSession) -> Problem | None:
        """The refusal to show on this page, once."""
        problem, session.problem = session.problem, None
        if problem is not None:
            await self._update(session.session_id, problem=None)
        return problem

    async def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            async with self.engine.begin() as db:
                await db.execute(delete(console_sessions).where(console_sessions.c.id_hash == _key_of(session_id)))

    async def _update(self, session_id: str, **values: Any) -> None:
        async with self.engine.begin() as db:
            await db.execute(
                update(console_sessions).where(console_sessions.c.id_hash == _key_of(session_id)).values(**values)
            )

    async def _purge(self, db: AsyncConnection) -> None:
        """Sessions idle too long, or whose tokens can no longer be refreshed, are gone for every replica."""
        at = now()
        await db.execute(
            delete(console_sessions).where(
                (console_sessions.c.last_seen_at < at - timedelta(seconds=self.idle_timeout_s))
                | (
                    (console_sessions.c.token_expires_at < at)
                    & (console_sessions.c.refresh_expires_at.is_(None) | (console_sessions.c.refresh_expires_at < at))
                )
            )
        )
