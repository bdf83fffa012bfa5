"""The console's own database: the staff sessions every console replica shares (console/sessions.py)."""

from sqlalchemy import Column, DateTime, Index, LargeBinary, String, Table
from sqlalchemy.dialects.postgresql import JSONB

from kit.db import make_metadata

metadata = make_metadata()

console_sessions = Table(
    "console_sessions",
    metadata,
    # SHA-256 of the cookie's session id: the table alone gives no one a session.
    Column("id_hash", String(64), primary_key=True),
    Column("admin_id", String(64), nullable=False),
    Column("login", String(128), nullable=False),
    Column("roles", JSONB, nullable=False),
    Column("lang", String(2), nullable=False),
    Column("pending", JSONB, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    # The access and refresh tokens, AES-GCM under CONSOLE_SESSION_KEY.
    Column("tokens", LargeBinary, nullable=False),
    Column("token_expires_at", DateTime(timezone=True), nullable=False),
    Column("refresh_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    # A form's refusal to show once on the next page: {status, code, detail}.
    Column("problem", JSONB, nullable=True),
    Index("ix_console_sessions_last_seen_at", "last_seen_at"),
    Index("ix_console_sessions_admin_id", "admin_id"),
)
