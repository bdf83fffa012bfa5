from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Date, DateTime, Identity, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import define_kit_tables, make_metadata

metadata = make_metadata()
define_kit_tables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class UserStatus:
    ACTIVE = "active"
    BLOCKED = "blocked"
    DEREGISTERED = "deregistered"


class User(Base):
    __tablename__ = "users"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    username: Mapped[str | None] = mapped_column(String(32), unique=True)
    birth_date: Mapped[date | None] = mapped_column(Date)
    # Deregistration frees the phone at once (it becomes a tombstone) and keeps the real number
    # here until the anonymisation job clears the personal data after the retention period.
    former_phone: Mapped[str | None] = mapped_column(String(16))
    deregistered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    anonymised_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    display_name: Mapped[str | None] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default=UserStatus.ACTIVE)
    terms_version: Mapped[str] = mapped_column(String(32))
    terms_accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AdminRole:
    SUPER_ADMIN = "super_admin"
    OPERATOR = "operator"
    FIELD_MAINTENANCE = "field_maintenance"
    SUPPORT = "support"
    FINANCE = "finance"
    ANALYST = "analyst"


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), server_default=UserStatus.ACTIVE)  # active | disabled
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set by an administrator who chose or reset the password: the next session can only change it.
    must_change_password: Mapped[bool] = mapped_column(server_default="false")
    # TOTP (RFC 6238) second factor: secrets encrypted with ADMIN_TOTP_KEY (AES-GCM, bound to the admin
    # id). `totp_pending` holds a secret enrolled but not yet confirmed with a code.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_pending: Mapped[str | None] = mapped_column(Text)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # a code is accepted once
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdminSession(Base):
    """One administrator sign-in: its access token's id, so staff sessions can be listed and revoked."""

    __tablename__ = "admin_sessions"
    __table_args__ = (
        Index("ix_admin_sessions_admin", "admin_id", "created_at"),
        Index("ix_admin_sessions_refresh", "refresh_hash", unique=True),
        Index("ix_admin_sessions_previous_refresh", "previous_refresh_hash"),
    )

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    admin_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    restricted: Mapped[bool]  # may only complete what is pending (password change, TOTP enrolment)
    client_ip: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    # Refresh (staff.service.refresh_session): the current refresh token's hash and expiry, the one it
    # replaced (presented again: the session is revoked), the session's hard end, and the access token
    # the last refresh replaced (still valid for a while: denied with the session).
    refresh_hash: Mapped[str | None] = mapped_column(String(64))
    previous_refresh_hash: Mapped[str | None] = mapped_column(String(64))
    refresh_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    previous_token_id: Mapped[str | None] = mapped_column(String(64))


class VerificationCode(Base):
    """A one-time code sent by SMS (or e-mail); only its hash is kept."""

    __tablename__ = "verification_codes"
    __table_args__ = (
        Index("ix_verification_codes_destination", "destination", "created_at"),
        Index("ix_verification_codes_client_ip", "client_ip", "created_at"),
    )

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))  # sms | email
    destination: Mapped[str] = mapped_column(String(254))
    purpose: Mapped[str] = mapped_column(String(20))
    code_hash: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str] = mapped_column(String(64))
    delivered: Mapped[bool] = mapped_column(server_default="true")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DevMessage(Base):
    """What the sandbox SMS/e-mail provider "sent": the development outbox, never served in production."""

    __tablename__ = "dev_messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))
    destination: Mapped[str] = mapped_column(String(254), index=True)
    body: Mapped[str] = mapped_column(Text)
    code: Mapped[str | None] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(12))  # delivered | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class LoginFailure(Base):
    """Failed logins per login identifier (whether or not it names anyone), for the lockout."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(330), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RefreshToken(Base):
    """One refresh token of a rotation family; only the hash of the opaque token is kept."""

    __tablename__ = "refresh_tokens"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    family_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), index=True)
    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    access_jti: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the family belongs to a client application acting for the user (OAuth 2.0).
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    scopes: Mapped[list[str] | None] = mapped_column(JSONB)


class RevokedAccessToken(Base):
    """Access-token ids revoked before they expire (logout, reuse detection)."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AdminAction(Base):
    """The audit log: one row per administrative action, written in the action's transaction."""

    __tablename__ = "admin_actions"
    __table_args__ = (Index("ix_admin_actions_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    admin_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), index=True)
    admin_roles: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target_type: Mapped[str] = mapped_column(String(30))
    target_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StaffAuditEntry(Base):
    """The platform's audit trail: every staff action in every service (`audit.staff.v1`), append-only
    (a trigger refuses UPDATE and DELETE) and hash-chained: `hash` = SHA-256 of the previous entry's hash
    and this entry's canonical content, so changing or removing an entry breaks every hash after it."""

    __tablename__ = "staff_audit"
    __table_args__ = (
        Index("ix_staff_audit_actor", "actor_id", "seq"),
        Index("ix_staff_audit_target", "target_type", "target_id"),
        Index("ix_staff_audit_occurred", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), unique=True)
    service: Mapped[str] = mapped_column(String(40))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_roles: Mapped[list[str]] = mapped_column(JSONB)
    action: Mapped[str] = mapped_column(String(80), index=True)
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)
    client_address: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class EligibilityDecision(Base):
    """Every registration's eligibility audit: accepted or rejected, with the reasons and the rules."""

    __tablename__ = "eligibility_decisions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), index=True)
    user_id: Mapped[UUID | None] = mapped_column(PgUUID(as_uuid=True))
    accepted: Mapped[bool]
    reasons: Mapped[list[str]] = mapped_column(JSONB)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONB)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class RentalObligation(Base):
    """user-svc's projection of a user's rentals and their payment (billing.rentals.v1, asset.payments.v1),
    so deregistration can be refused while a rental is active or a fee unpaid."""

    __tablename__ = "rental_obligations"

    rental_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), index=True)
    state: Mapped[str] = mapped_column(String(12))  # active | ended | failed | unknown
    fee_fen: Mapped[int] = mapped_column(BigInteger, server_default="0")
    paid: Mapped[bool] = mapped_column(server_default="false")


class ApiKey(Base):
    """A key for the supervision platform or a third party: exchanged for short-lived client tokens
    carrying its scopes. Only the hash of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    created_by: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthClient(Base):
    """A registered client application (a mini program, a partner app) that obtains tokens on behalf
    of users through the authorization code flow with PKCE. Only the hash of a confidential
    client's secret is kept; a public client has none."""

    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    redirect_uris: Mapped[list[str]] = mapped_column(JSONB)
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    confidential: Mapped[bool]
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthConsent(Base):
    """What a user allowed an application to do, and when; revoking it ends the application's tokens."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OAuthCode(Base):
    """A one-time authorization code (hashed), bound to client, redirect URI, PKCE challenge, user and
    scopes. `family_id` names the tokens issued from it, revoked if the code is presented again."""

    __tablename__ = "oauth_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[UUID] = mapped_column(PgUUID(as_uuid=True))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    code_challenge: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    family_id: Mapped[UUID | None] = mapped_column(PgUUID(as_uuid=True))
